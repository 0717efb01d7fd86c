"""The side-by-side benchmark: train each (task, policy, seed) with the command a user types, evaluate Diffusion
Policy's checkpoints a second time with DDIM-10, and store one run file per (task, variant, seed).

Training runs as a subprocess of ``scripts/train_policy.py`` so the recorded command is exactly what reproduces it.
Both policies get the same task config, scale, seed and extra overrides; only ``policy=`` differs. Diffusion runs
keep every evaluation checkpoint (``training.checkpoint_top_k`` raised) so DDIM-10 is scored on the same
checkpoints as DDPM-100; afterwards the folder is pruned back to the usual top-k + newest.

A run whose file exists is skipped; an interrupted training resumes from its last checkpoint (its wall time is
accumulated in ``<run_dir>/benchmark_wall.json``), and DDIM evaluations already written are reused, so a suite
can be built up over several sittings.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
from omegaconf import OmegaConf

from drifting_policy.benchmark.protocol import eval_records, write_run

REPO = Path(__file__).resolve().parents[2]
KEEP_ALL = "training.checkpoint_top_k=1000000"  # every evaluation checkpoint survives until DDIM-10 has seen it
DDIM_STEPS = 10
BACKBONE_KEYS = ("down_dims", "kernel_size", "n_groups", "state_mlp_dims", "image_feature_dim", "camera_trunk",
                 "camera_width", "camera_resize")


def overrides_tag(overrides: list[str]) -> str:
    """'' without extra overrides, else '__' + a short hash, so differently configured suites never share files."""
    return "__" + hashlib.sha1(" ".join(overrides).encode()).hexdigest()[:8] if overrides else ""


def run_file(out: Path, task: str, scale: str, variant: str, seed: int, overrides: list[str]) -> Path:
    return Path(out) / f"{task}__{scale}__{variant}__seed{seed}{overrides_tag(overrides)}.json"


def run_dir(run_root: Path, task: str, scale: str, policy: str, seed: int, overrides: list[str]) -> Path:
    return Path(run_root) / task / f"{scale}{overrides_tag(overrides)}" / policy / f"seed{seed}"


def train_command(task: str, policy: str, seed: int, scale: str, folder: Path, overrides: list[str]) -> list[str]:
    """The training command as a user types it (``python`` stands for the interpreter running the benchmark)."""
    keep = [KEEP_ALL] if policy == "diffusion" else []
    return ["python", "scripts/train_policy.py", f"task={task}", f"policy={policy}", f"scale={scale}", f"seed={seed}",
            f"run_dir={folder}", "training.resume=true", *overrides, *keep]


def variant_name(policy_cfg) -> str:
    """'drifting', or the diffusion sampler and its steps as configured (e.g. 'ddpm100')."""
    if policy_cfg.name != "diffusion":
        return policy_cfg.name
    return f"{policy_cfg.sampler}{policy_cfg.num_inference_steps}"


def _last_state(folder: Path) -> tuple[dict, object] | None:
    last = folder / "checkpoints" / "last"
    if not (last / "config.yaml").exists():
        return None
    state = json.loads((last / "training_state" / "state.json").read_text())
    return state, OmegaConf.load(last / "config.yaml")


def train(cmd: list[str], folder: Path, threads: int) -> None:
    """Run (or resume) one training unless its last checkpoint is already the final epoch; add its wall time."""
    last = _last_state(folder)
    if last is not None and last[0]["epoch"] >= last[1].training.num_epochs:
        return
    if last is None and folder.exists():  # a crashed attempt with no checkpoint: its log would duplicate records
        shutil.rmtree(folder)
    env = os.environ | {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    print(f"\n$ {shlex.join(cmd)}", flush=True)
    start = time.time()
    proc = subprocess.run([sys.executable, *cmd[1:]], cwd=REPO, env=env)
    elapsed = time.time() - start
    folder.mkdir(parents=True, exist_ok=True)
    wall_file = folder / "benchmark_wall.json"
    attempts = json.loads(wall_file.read_text())["attempts_s"] if wall_file.exists() else []
    wall_file.write_text(json.dumps({"attempts_s": attempts + [elapsed]}))
    if proc.returncode != 0:
        raise RuntimeError(f"training failed (exit {proc.returncode}): {shlex.join(cmd)}")


def read_log(folder: Path) -> list[dict]:
    path = folder / "metrics.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: the training wrote no log")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def ddim_records(folder: Path, epochs: list[int], cfg, threads: int) -> list[dict]:
    """Score each evaluation checkpoint again with DDIM-10 on the same test seeds (cached per checkpoint)."""
    from drifting_policy.evaluation.evaluate import evaluate_checkpoint

    torch.set_num_threads(threads)
    records = []
    for epoch in epochs:
        ckpt = folder / "checkpoints" / f"epoch_{epoch:04d}"
        out = folder / f"eval_ddim{DDIM_STEPS}" / ckpt.name
        if (out / "metrics.json").exists():
            summary = json.loads((out / "metrics.json").read_text())["summary"]
        elif not (ckpt / "ema.safetensors").exists():
            raise FileNotFoundError(f"{ckpt} is missing: DDIM-{DDIM_STEPS} needs every evaluation checkpoint "
                                    f"(the benchmark trains diffusion with {KEEP_ALL})")
        else:
            summary = evaluate_checkpoint(ckpt, n_episodes=cfg.task.eval.n_test, seed_start=cfg.task.eval.test_start_seed,
                                          n_videos=0, out=out, sampler="ddim", num_inference_steps=DDIM_STEPS,
                                          device="cuda" if torch.cuda.is_available() else "cpu")
        records.append({"epoch": epoch} | {f"test/{k}": v for k, v in summary.items()
                                           if isinstance(v, (int, float)) and not isinstance(v, bool)
                                           and k not in ("seed_start", "sampling_seed", "torch_threads", "num_inference_steps")})
    return records


def prune(folder: Path, records: list[dict], top_k: int) -> None:
    """Back to what the trainer keeps by default: the top_k best-scoring evaluation checkpoints and the newest."""
    ckpts = folder / "checkpoints"
    best = sorted(records, key=lambda r: -r["test/mean_score"])[:top_k]
    keep = {f"epoch_{r['epoch']:04d}" for r in best} | {(ckpts / "last").resolve().name}
    for sub in ckpts.glob("epoch_*"):
        if sub.name not in keep and not sub.name.endswith(".tmp"):
            shutil.rmtree(sub)


# Budget knobs a task may set per policy (configs/task_scale_policy/<task>_<scale>_<policy>.yaml): drifting's step
# costs ~G diffusion steps, so equal wall clock means different epochs. They are recorded in the run file
# (num_epochs, training_budget) and the report compares the measured training compute instead.
PER_POLICY_BUDGET = ("num_epochs", "lr")


def fingerprint(cfg) -> dict:
    """What must be identical across policies for a fair comparison: data, backbone, optimiser, evaluation, seed."""
    training = OmegaConf.to_container(cfg.training, resolve=True)
    for key in ("checkpoint_top_k", "resume", "num_workers", *PER_POLICY_BUDGET):
        training.pop(key, None)
    return {"dataset": OmegaConf.to_container(cfg.task.dataset, resolve=True),
            "backbone": {k: OmegaConf.to_container(cfg.policy, resolve=True).get(k) for k in BACKBONE_KEYS},
            "training": training, "eval": OmegaConf.to_container(cfg.task.eval, resolve=True), "seed": cfg.seed,
            "horizons": [cfg.task.n_obs_steps, cfg.task.n_action_steps, cfg.task.horizon]}


def _git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    except OSError:
        return None


def done_variants(out: Path, task: str, scale: str, policy: str, seed: int, overrides: list[str]) -> set[str]:
    """The variants of this policy whose run file for (task, scale, seed, overrides) already exists."""
    pattern = f"{task}__{scale}__*__seed{seed}{overrides_tag(overrides)}.json"
    runs = [json.loads(p.read_text()) for p in Path(out).glob(pattern)]
    return {r["variant"] for r in runs if r.get("policy") == policy}


def benchmark_one(task: str, policy: str, seed: int, scale: str, out: Path, run_root: Path, overrides: list[str],
                  threads: int = 1, keep_top_k: int = 5, suite_command: str | None = None) -> list[Path]:
    """Train (or resume) one (task, policy, seed) and write the run files it still lacks; returns those written."""
    folder = run_dir(run_root, task, scale, policy, seed, overrides)
    cmd = train_command(task, policy, seed, scale, folder, overrides)
    done = done_variants(out, task, scale, policy, seed, overrides)
    if (policy != "diffusion" and done) or (f"ddim{DDIM_STEPS}" in done and len(done) >= 2):
        return []
    train(cmd, folder, threads)
    _, cfg = _last_state(folder)
    log = read_log(folder)
    records = eval_records(log)
    if not records:
        raise ValueError(f"{folder / 'metrics.jsonl'} holds no evaluation records (test/mean_score): task.eval.n_test "
                         "must be > 0 for a benchmark")
    wall_file = folder / "benchmark_wall.json"
    base = {
        "task": task, "policy": policy, "seed": seed, "scale": cfg.scale, "overrides": overrides,
        "command": shlex.join(cmd), "suite_command": suite_command, "run_dir": str(folder),
        "train_wall_s": sum(json.loads(wall_file.read_text())["attempts_s"]) if wall_file.exists() else None,
        "train_compute_s": sum(r.get("epoch_time_s", 0.0) for r in log),
        "train_cpu_s": sum(r.get("epoch_cpu_s", 0.0) for r in log) or None,  # process CPU time of the training steps
        "num_epochs": int(cfg.training.num_epochs), "torch_threads": threads, "fingerprint": fingerprint(cfg),
        "training_budget": {k: cfg.training[k] for k in PER_POLICY_BUDGET},
        "host": {"machine": platform.machine(), "processor": platform.processor(), "cpus": os.cpu_count(),
                 "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None},
        "git_commit": _git_commit(), "written": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    keep = lambda r: {k: v for k, v in r.items() if k == "epoch" or k.startswith(("test/", "train/"))}  # noqa: E731
    written = []
    configured = variant_name(cfg.policy)
    path = run_file(out, task, scale, configured, seed, overrides)
    if not path.exists():
        written.append(write_run(path, base | {"variant": configured, "records": [keep(r) for r in records]}))
    if policy == "diffusion" and configured != f"ddim{DDIM_STEPS}":
        path = run_file(out, task, scale, f"ddim{DDIM_STEPS}", seed, overrides)
        if not path.exists():
            start = time.time()
            ddim = ddim_records(folder, [r["epoch"] for r in records], cfg, threads)
            eval_cmd = (f"python scripts/eval_policy.py checkpoint={folder}/checkpoints/epoch_EEEE "
                        f"n_episodes={cfg.task.eval.n_test} seed_start={cfg.task.eval.test_start_seed} n_videos=0 "
                        f"sampler=ddim num_inference_steps={DDIM_STEPS}  # for each evaluation epoch EEEE")
            written.append(write_run(path, base | {"variant": f"ddim{DDIM_STEPS}", "records": ddim,
                                                   "eval_command": eval_cmd, "ddim_eval_wall_s": time.time() - start}))
        prune(folder, records, keep_top_k)
    return written
