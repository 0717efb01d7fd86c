"""Rerun issue 19's fault cases on tiny PushT-shaped runs and print what each one did; exit 1 if any misbehaves.

    python scripts/fault_injection.py [--keep DIR]

Every case builds its own damage in a temporary folder (synthetic zarr stores and robomimic files, no demo
generation) and goes through the real entry points: Trainer, ReplayBuffer / PolicyDataset, envs.datasets,
evaluate_checkpoint and scripts/eval_policy.py. A case is OK when it fails loudly naming what it should (or, for
the kills, resumes to exactly the uninterrupted run).
"""

import os

os.environ.setdefault("TQDM_DISABLE", "1")  # before tqdm is imported: it reads its settings then

import argparse
import contextlib
import io
import json
import shutil
import subprocess
import sys
import tempfile
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import safetensors.torch
import torch
import zarr
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
import envs  # noqa: E402,F401  (registers the PushT env)
from drifting_policy.data.dataset import PolicyDataset, load_replay_buffer  # noqa: E402
from drifting_policy.data.replay_buffer import ReplayBuffer  # noqa: E402
from drifting_policy.data.robomimic_hdf5 import read_robomimic_hdf5  # noqa: E402
from drifting_policy.evaluation.evaluate import evaluate_checkpoint  # noqa: E402
from drifting_policy.training.trainer import Trainer  # noqa: E402
from envs.datasets import prepare_dataset  # noqa: E402

STEPS = [(os, "replace"), (os, "unlink"), (os, "rmdir"), (os, "symlink"), (shutil, "rmtree"),
         (safetensors.torch, "save_file")]


def store(path, damage=None, fmt=2):
    """A PushT-shaped store (6 episodes x 20 steps; obs 20-D, action 2-D) written by ReplayBuffer.save."""
    rng, rb = np.random.default_rng(0), ReplayBuffer()
    for _ in range(6):
        obs = np.cumsum(rng.normal(0, 0.1, (20, 20)), 0).astype(np.float32)
        rb.add_episode({"obs": obs, "action": np.tanh(obs[:, :2]).astype(np.float32)})
    if damage:
        damage(rb.data)
    rb.save(path, zarr_format=fmt, chunk_steps=32)
    return path


def config(tmp, name, data=None, **over):
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        cfg = compose(config_name="train_policy", overrides=["task=pusht_state", "scale=paper", f"run_dir={tmp / name}"])
    data = data or (tmp / "ok.zarr" if (tmp / "ok.zarr").exists() else store(tmp / "ok.zarr"))
    cfg.task.dataset.update({"path": str(data), "obs_from_store": {"obs": ["obs"]}, "init_state_key": None})
    cfg.task.env.max_steps = 8
    cfg.task.eval.update({"n_test": 1, "n_train": 0, "n_videos": 0, "every_epochs": 2})
    cfg.policy.down_dims = [16, 32]
    cfg.training.update({"num_epochs": 2, "batch_size": 64, "warmup_steps": 1, "checkpoint_every": 1})
    for key, value in over.items():
        OmegaConf.update(cfg, key, value, force_add=True)
    return cfg


def edit_array(path, name, change):
    root = zarr.open_group(str(path), mode="r+")
    values = change(root[name][:])
    del root[name]
    with zarr.config.set({"array.write_empty_chunks": True}):
        root[name.rsplit("/", 1)[0]].create_array(name.rsplit("/", 1)[1], data=values, chunks=(4,) + values.shape[1:])
    return path


def chunk(path, name, i=1):
    array = zarr.open_group(str(path), mode="r")[name]
    return path / name / array.metadata.encode_chunk_key((i,) + (0,) * (array.ndim - 1))


def robomimic_file(path, short_actions=False):
    import h5py

    with h5py.File(path, "w") as f:  # robomimic's layout, the second demo's actions one step short
        f.create_group("data").attrs["env_args"] = json.dumps({"env_name": "Lift", "env_kwargs": {}})
        for i, n in enumerate((12, 9)):
            f.create_dataset(f"data/demo_{i}/actions", data=np.zeros((n - (short_actions and i == 1), 7)))
            f.create_dataset(f"data/demo_{i}/states", data=np.zeros((n, 10)))
            f.create_dataset(f"data/demo_{i}/obs/object", data=np.zeros((n, 3)))
    return path


class Killed(BaseException):  # like KeyboardInterrupt: no ``except Exception`` swallows it
    pass


@contextmanager
def killed_at(n):
    """The n-th filesystem step raises; later ones do nothing (no clean-up reaches the disk, as after SIGKILL)."""
    count, originals = [0], [(m, a, getattr(m, a)) for m, a in STEPS]

    def counted(fn):
        def step(*args, **kwargs):
            count[0] += 1
            if count[0] == n:
                raise Killed
            return None if count[0] > n else fn(*args, **kwargs)
        return step

    for m, a, fn in originals:
        setattr(m, a, counted(fn))
    try:
        yield
    finally:
        for m, a, fn in originals:
            setattr(m, a, fn)


def outcome_of(run_dir):
    """What a finished run left: its log rows (less wall-clock fields) and every checkpoint file's bytes."""
    rows = [json.loads(r) for r in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return ([{k: v for k, v in r.items() if k not in ("time", "epoch_time_s", "epoch_cpu_s")} for r in rows],
            {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted((run_dir / "checkpoints").rglob("*"))
             if p.is_file() and p.name != "config.yaml"}, os.readlink(run_dir / "checkpoints" / "last"))


def kill_campaign(tmp):
    """Kill a 2-epoch run (plain save, evaluation save + score update + pruning) at each filesystem step."""
    Trainer(config(tmp, "reference")).run()
    expected, n, bad = outcome_of(tmp / "reference"), 0, []
    while True:
        n += 1
        cfg = config(tmp, f"kill{n}")
        trainer = Trainer(cfg)
        try:
            with killed_at(n):
                trainer.run()
            break  # fewer than n steps: all were kill points
        except Killed:
            pass
        cfg.training.resume = True
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            Trainer(cfg).run()
        if outcome_of(tmp / f"kill{n}") != expected:
            bad.append(n)
        shutil.rmtree(tmp / f"kill{n}")
    summary = f"{n - 1 - len(bad)}/{n - 1} kill points resumed bit-identically"
    if bad:
        raise AssertionError(f"{summary}; not at {bad}")
    return summary


def cases(tmp):
    """(case, expected, callable, substrings the error must contain, or None when it must run)."""
    ckpt, finished = tmp / "trained" / "checkpoints" / "epoch_0001", {"training.num_epochs": 1, "task.eval.n_test": 0}
    (tmp / "evil_env.py").write_text(f"open({str(tmp / 'IMPORTED')!r}, 'w').write('code from a checkpoint ran')\n"
                                     "def stats(results):\n    return {}\n")
    sys.path.insert(0, str(tmp))  # so that importing the module named by a checkpoint WOULD work (and show)
    (tmp / "a_file").write_text("")

    train = lambda name, data=None, **over: lambda: Trainer(config(tmp, name, data, **over)).run()  # noqa: E731
    resume_with = lambda key, value: train("trained", **(finished | {"training.resume": True, key: value}))  # noqa: E731
    bad_value = lambda key, value: lambda d: d[key].__setitem__((47, 1), value)  # episode 2, step 7, element 1

    def dataset(path):
        cfg = config(tmp, "x", data=path)
        return lambda: PolicyDataset(load_replay_buffer(cfg.task.dataset), cfg.task.shape_meta, cfg.task.dataset, 2, 8, 16)

    load = lambda path, damage: lambda: ReplayBuffer.load(damage(path) and path)  # noqa: E731
    new_ends = lambda change: lambda path: edit_array(path, "meta/episode_ends", change)  # noqa: E731

    truncate = lambda path: path.write_bytes(path.read_bytes()[: path.stat().st_size // 2]) or path  # noqa: E731
    break_json = lambda path: path.write_text(path.read_text()[:30]) or path  # noqa: E731

    def checkpoint_naming(name, key, value):
        folder = tmp / name
        shutil.copytree(ckpt, folder)
        cfg = OmegaConf.load(folder / "config.yaml")
        OmegaConf.update(cfg, key, value, force_add=True)
        OmegaConf.save(cfg, folder / "config.yaml")

        def evaluate():
            try:
                return evaluate_checkpoint(folder, n_episodes=1, n_videos=0, out=tmp / f"eval_{name}")
            finally:
                assert not (tmp / "IMPORTED").exists() and "evil_env" not in sys.modules, "CODE FROM A CHECKPOINT RAN"
        return evaluate

    def eval_script():
        proc = subprocess.run([sys.executable, "scripts/eval_policy.py", f"checkpoint={ckpt}", "n_episodes=1",
                               f"out={tmp / 'a_file' / 'eval'}"], cwd=REPO, capture_output=True, text=True, timeout=600)
        if proc.returncode == 0:
            return "exit 0"
        errors = [ln for ln in proc.stderr.splitlines() if "Error" in ln and "HYDRA_FULL_ERROR" not in ln]
        raise RuntimeError(f"exit {proc.returncode}: {errors[-1] if errors else proc.stderr[-300:]}")

    def truncated_ema():
        folder = Path(shutil.copytree(ckpt, tmp / "ck_ema"))
        truncate(folder / "ema.safetensors")
        return evaluate_checkpoint(folder, n_episodes=1, n_videos=0, out=tmp / "eval_ema")

    noise_hdf5 = lambda: read_robomimic_hdf5((tmp / "noise.hdf5").write_bytes(os.urandom(4096)) and  # noqa: E731
                                             tmp / "noise.hdf5", ["object"])

    return [
        ("re-run a finished run folder without resume", "FileExistsError naming the folder",
         train("trained", **finished), ["FileExistsError", "trained already holds a run", "training.resume=true"]),
        ("kill at each filesystem step of the saves", "resumes bit-identically", lambda: kill_campaign(tmp), None),
        ("NaN in actions", "error: file, array, episode, index",
         dataset(store(tmp / "a.zarr", bad_value("action", np.nan))),
         ["a.zarr", "'action'", "holds nan at episode 2, step 7", "element [1]"]),
        ("NaN in observations", "error: file, array, episode, index",
         dataset(store(tmp / "o.zarr", bad_value("obs", np.nan))), ["o.zarr", "'obs'", "holds nan at episode 2, step 7"]),
        ("Inf action", "error before the normaliser", train("inf", store(tmp / "i.zarr", bad_value("action", np.inf))),
         ["i.zarr", "'action' (the actions) holds inf at episode 2"]),
        ("policy.temperatures=[]", "error at start", train("t0", **{"policy.temperatures": []}), ["policy.temperatures"]),
        ("policy.temperatures=[0]", "error at start", train("t1", **{"policy.temperatures": [0]}), ["policy.temperatures"]),
        ("policy.n_samples=0", "error at start", train("g0", **{"policy.n_samples": 0}), ["policy.n_samples"]),
        ("training.batch_size=0", "error at start", train("b0", **{"training.batch_size": 0}), ["training.batch_size"]),
        ("training.num_epochs=0", "error at start", train("e0", **{"training.num_epochs": 0}), ["training.num_epochs"]),
        ("episode_ends out of order", "error: file, array", load(store(tmp / "ord.zarr"), new_ends(
            lambda e: e[[0, 2, 1, 3, 4, 5]])), ["ord.zarr", "meta/episode_ends", "strictly increasing"]),
        ("an episode end beyond the data", "error: file, array", load(store(tmp / "end.zarr"), new_ends(
            lambda e: e + [0, 0, 0, 0, 0, 9])), ["end.zarr", "meta/episode_ends", "ends at 129"]),
        ("deleted zarr chunk (v3)", "error: array, chunk file", load(store(tmp / "del.zarr", fmt=3), lambda p: (
            chunk(p, "data/action").unlink() or True)), ["data/action", "chunk (1, 0)", "missing"]),
        ("truncated chunk (v2, blosc)", "error: array, chunk file", load(store(tmp / "cut.zarr"), lambda p: truncate(
            chunk(p, "data/obs"))), ["data/obs", "cut.zarr/data/obs/1.0", "truncated"]),
        ("broken zarr.json", "error: node, file", load(store(tmp / "meta.zarr", fmt=3), lambda p: break_json(
            p / "data" / "action" / "zarr.json")), ["'data/action'", "meta.zarr/data/action/zarr.json is broken"]),
        ("typo'd dataset path", "FileNotFoundError, nothing generated",
         lambda: prepare_dataset(config(tmp, "x", data=tmp / "pusht_expret.zarr").task),
         ["pusht_expret.zarr", "does not exist"]),
        ("public dataset name, file missing", "FileNotFoundError, nothing generated",
         lambda: prepare_dataset(config(tmp, "x", data="data/pusht_cchi_v7_replay.zarr").task),
         ["data/pusht_cchi_v7_replay.zarr", "does not exist"]),
        ("checkpoint env id 'module:Env-v0'", "refused, nothing imported",
         checkpoint_naming("ck_env", "task.env.id", "evil_env:Evil-v0"), ["names a module to import"]),
        ("checkpoint task.eval.mode_statistics 'module:fn'", "ignored and said so, nothing imported",
         checkpoint_naming("ck_ms", "task.eval.mode_statistics", "evil_env:stats"), None),
        ("resume with a changed lr", "error listing the change", resume_with("training.lr", 1e-3),
         ["training.lr: 0.0001 -> 0.001"]),
        ("resume with a changed batch size", "error listing the change", resume_with("training.batch_size", 32),
         ["training.batch_size: 64 -> 32"]),
        ("resume with changed epochs", "error listing the change", resume_with("training.num_epochs", 5),
         ["training.num_epochs: 1 -> 5"]),
        ("eval_policy.py with an unwritable out", "non-zero exit naming out", eval_script, ["exit 1", "a_file/eval"]),
        ("robomimic actions shorter than states", "error: demo, lengths",
         lambda: read_robomimic_hdf5(robomimic_file(tmp / "short.hdf5", True), ["object"]),
         ["data/demo_1", "'actions': 8, 'states': 9"]),
        ("random-bytes HDF5", "error naming the file", noise_hdf5, ["noise.hdf5 is not a readable HDF5"]),
        ("truncated ema.safetensors", "error naming the file", truncated_ema,
         ["ck_ema/ema.safetensors is not a readable safetensors"]),
    ]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", help="work in this folder and keep it (default: a temporary folder)")
    args = parser.parse_args()
    tmp = Path(args.keep or tempfile.mkdtemp(prefix="fault_injection_")).resolve()
    tmp.mkdir(parents=True, exist_ok=True)
    os.chdir(tmp)  # relative dataset paths (and anything wrongly generated) land here, never in the repository
    torch.set_num_threads(1)
    Trainer(config(tmp, "trained", **{"training.num_epochs": 1, "task.eval.n_test": 0})).run()  # cases' checkpoint
    rows, failures, log = [], 0, io.StringIO()
    for name, expected, call, needles in cases(tmp):
        with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(log), \
                contextlib.redirect_stderr(log):  # progress bars and prints: the table is the output
            warnings.simplefilter("always")
            try:
                outcome, ok = f"ran: {call()}", needles is None
            except Exception as e:  # noqa: BLE001 (the outcome is what is judged)
                outcome = f"{type(e).__name__}: {e}"
                ok = needles is not None and all(n in outcome for n in needles)
        if "mode_statistics" in name:  # a retired key is ignored, and said so
            said = [str(w.message) for w in caught if "mode_statistics" in str(w.message)]
            ok, outcome = ok and bool(said), f"{outcome[:40]}; warned: {said[0] if said else 'NOTHING'}"
        ok = ok and not (tmp / "IMPORTED").exists() and not (tmp / "data").exists()
        failures += not ok
        outcome = " ".join(outcome.replace(str(tmp), "$TMP").split())
        at = min([outcome.find(n) for n in needles or [] if n in outcome] or [0])  # show the part that matters
        start = at - 50 if at > 150 else 0
        cut = (f"{outcome[:30]} … " if start else "") + outcome[start:start + 190]
        outcome = cut + (" …" if start + 190 < len(outcome) else "")
        rows.append((name, expected, outcome, "OK" if ok else "FAIL"))
    print("| case | expected | outcome | result |\n|---|---|---|---|")
    for name, expected, outcome, result in rows:
        print(f"| {name} | {expected} | {outcome.replace('|', '/')} | {result} |")
    print(f"\n{len(rows) - failures}/{len(rows)} OK ({tmp})")
    if not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
