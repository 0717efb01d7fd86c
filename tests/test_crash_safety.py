"""A run killed at ANY step of its checkpoint saves resumes to exactly the run it would have been (issue 19).

Every filesystem step the trainer takes after training starts (each rename, link, delete and safetensors write, in
both the plain save of epoch 1 and the evaluation epoch 2: the save before the rollouts, the state.json update
after, the pruning) is a kill point. For each n, a fresh run is killed at its n-th step: the step raises, and no
later step reaches the disk (the clean-up of ``except`` / ``finally`` blocks is dropped, as after a SIGKILL, so
temporary files stay). The run is then resumed and must end bit-identical to an uninterrupted run: weights, EMA,
optimizer, scheduler, RNG, scores, the checkpoint folders kept, and metrics.jsonl with each epoch exactly once.
"""

import json
import os
import shutil
import warnings
from contextlib import contextmanager
from pathlib import Path

import pytest
import safetensors.torch
import yaml
from conftest import pusht_like_config
from safetensors.torch import load_file

from drifting_policy.training.trainer import Trainer

STEPS = [(os, "replace"), (os, "unlink"), (os, "rmdir"), (os, "symlink"), (shutil, "rmtree"),
         (safetensors.torch, "save_file")]
VOLATILE = {"time", "epoch_time_s", "epoch_cpu_s"}  # wall-clock fields of a log row


def two_epoch_config(tmp_path, name):
    """Two epochs of the pusht_like run: epoch 1 saves a plain checkpoint, epoch 2 evaluates (one real PushT
    rollout), records its score and prunes epoch 1."""
    return pusht_like_config(tmp_path, **{
        "run_dir": str(tmp_path / name), "task.env.max_steps": 8, "task.eval.n_test": 1, "task.eval.n_train": 0,
        "task.eval.every_epochs": 2, "training.num_epochs": 2, "training.batch_size": 64, "training.checkpoint_every": 1})


class Killed(BaseException):
    """The injected kill (a BaseException, like KeyboardInterrupt: no ``except Exception`` swallows it)."""


@contextmanager
def killed_at(n: int, only=None):
    """Count the filesystem steps (those for which ``only(name, args)`` holds, when given); the n-th raises
    ``Killed`` instead of happening, and every later step (the clean-up of ``except`` / ``finally`` blocks on the
    way out) does nothing, as after a SIGKILL."""
    count, originals = [0], [(module, name, getattr(module, name)) for module, name in STEPS]

    def counted(fn):
        def step(*args, **kwargs):
            if count[0] >= n:
                return None
            if only is None or only(fn.__name__, args):
                count[0] += 1
                if count[0] == n:
                    raise Killed(n)
            return fn(*args, **kwargs)
        return step

    for module, name, fn in originals:
        setattr(module, name, counted(fn))
    try:
        yield count
    finally:
        for module, name, fn in originals:
            setattr(module, name, fn)


def run_killed(cfg, n: int, only=None) -> bool:
    """Run ``cfg``, killed at filesystem step n; False when the run has fewer than n steps."""
    with warnings.catch_warnings():  # a resumed run may fall back to an older checkpoint, and say so
        warnings.simplefilter("ignore")
        trainer = Trainer(cfg)  # the kill points start with training (a fresh run folder needs no steps before)
    try:
        with killed_at(n, only):
            trainer.run()
    except Killed:
        return True
    return False


def checkpoint_tree(run_dir):
    root = run_dir / "checkpoints"
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")), os.readlink(root / "last")


def assert_same_checkpoint(a, b):
    for f in ("model.safetensors", "ema.safetensors", "training_state/optimizer.safetensors",
              "training_state/rng.safetensors"):
        ta, tb = load_file(a / f), load_file(b / f)
        assert ta.keys() == tb.keys(), f
        assert all(ta[k].dtype == tb[k].dtype and ta[k].equal(tb[k]) for k in ta), f
    for f in ("training_state/optimizer.json", "training_state/state.json"):
        assert json.loads((a / f).read_text()) == json.loads((b / f).read_text()), f  # scheduler, RNG, scores
    config = [yaml.safe_load((c / "config.yaml").read_text()) for c in (a, b)]
    for c in config:
        del c["run_dir"], c["training"]["resume"]
    assert config[0] == config[1]


def log_rows(run_dir):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in VOLATILE} for r in rows]


def differences(run_dir, ref_dir) -> str | None:
    """How a finished run differs from the uninterrupted reference, or None."""
    try:
        assert log_rows(run_dir) == log_rows(ref_dir)
        assert checkpoint_tree(run_dir) == checkpoint_tree(ref_dir)
        assert_same_checkpoint(run_dir / "checkpoints" / "last", ref_dir / "checkpoints" / "last")
    except AssertionError as e:
        return str(e)[:300]
    return None


def resume(cfg):
    cfg.training.resume = True
    with warnings.catch_warnings():  # a fallback to an older checkpoint warns; the outcome is what is judged
        warnings.simplefilter("ignore")
        Trainer(cfg).run()


@pytest.fixture
def reference(tmp_path):
    Trainer(two_epoch_config(tmp_path, "uninterrupted")).run()
    rows = log_rows(tmp_path / "uninterrupted")
    assert [r["epoch"] for r in rows] == [1, 2] and "test/mean_score" in rows[1]
    return tmp_path / "uninterrupted"


def kill_at_every_step(make_cfg, reference) -> tuple[int, dict]:
    """Run ``make_cfg(n)`` killed at its n-th filesystem step, resume it, compare with ``reference``, for n = 1, 2,
    ... until a run has fewer than n steps. Returns (the number of kill points, {n: difference})."""
    n, failed = 0, {}
    while True:
        n += 1
        cfg = make_cfg(n)
        if not run_killed(cfg, n):  # fewer than n steps in the whole run: every step has been a kill point
            return n - 1, failed
        resume(cfg)
        if problem := differences(Path(cfg.run_dir), reference):
            failed[n] = problem
        shutil.rmtree(cfg.run_dir)


def test_a_kill_at_every_step_of_every_save_resumes_bit_identically(tmp_path, reference):
    steps, failed = kill_at_every_step(lambda n: two_epoch_config(tmp_path, f"killed_{n}"), reference)
    assert steps >= 30, f"only {steps} filesystem steps in two epochs with three saves: the injection missed them"
    assert not failed, f"{len(failed)} of {steps} kill points did not resume exactly: {failed}"


def test_a_kill_during_the_resave_of_an_epoch_resumes_bit_identically(tmp_path, reference):
    """Killed after epoch 2's folder was renamed into place but before ``last`` named it, the run resumes from
    epoch 1 and saves epoch 2 again over the existing folder (moved to ``.old`` first): a second kill at each step
    of that resumed run still ends as the uninterrupted run."""
    first = two_epoch_config(tmp_path, "first_kill")
    assert run_killed(first, 1, only=lambda name, args: name == "symlink" and str(args[0]) == "epoch_0002")
    assert os.readlink(tmp_path / "first_kill" / "checkpoints" / "last") == "epoch_0001"

    def again(m):
        shutil.copytree(tmp_path / "first_kill", tmp_path / f"again_{m}", symlinks=True)
        cfg = two_epoch_config(tmp_path, f"again_{m}")
        cfg.training.resume = True
        return cfg

    steps, failed = kill_at_every_step(again, reference)
    assert steps >= 20, f"only {steps} steps in the resumed run"
    assert not failed, f"{len(failed)} of {steps} second kill points did not resume exactly: {failed}"


def test_a_resave_of_the_folder_last_names_killed_between_its_renames_is_recovered(tmp_path):
    """``save_folder`` over the very folder ``last`` names moves it to ``.old`` and the new one into place: killed in
    between, ``last`` names nothing; ``find_last`` falls back to the complete ``.old`` copy (with a warning) and
    ``recover`` puts it back under its name."""
    import torch

    from drifting_policy.utils import checkpoint as ckpt

    def save(value):
        return ckpt.save_folder(tmp_path / "epoch_0001", {"model": {"w": torch.full((3,), value)}}, {"c": 1},
                                {"global_step": 5})

    save(1.0)
    with pytest.raises(Killed), killed_at(1, only=lambda name, args: name == "replace" and
                                          str(args[0]).endswith("epoch_0001.tmp")):
        save(2.0)
    assert not (tmp_path / "epoch_0001").exists() and (tmp_path / "last").is_symlink()
    with pytest.warns(UserWarning, match="does not name a complete checkpoint"):
        assert ckpt.find_last(tmp_path).name == "epoch_0001.old"
    assert ckpt.recover(tmp_path) == ["restored epoch_0001 from epoch_0001.old", "removed the unfinished epoch_0001.tmp"]
    assert ckpt.find_last(tmp_path) == (tmp_path / "epoch_0001").resolve()
    assert load_file(tmp_path / "last" / "model.safetensors")["w"].tolist() == [1.0] * 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch_0001", "last"]


def test_a_log_line_cut_by_a_kill_is_dropped_and_a_damaged_middle_line_is_named(tmp_path):
    from drifting_policy.training.logger import RunLogger

    logger = RunLogger(tmp_path, {})
    for step in (6, 12):
        logger.log({"epoch": step // 6}, step=step)
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 18, "epo')  # appends are not atomic: a kill can leave part of a line
    with pytest.warns(UserWarning, match="dropping its last line, cut short"):
        logger.truncate_after(12)
    assert [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [6, 12]
    (tmp_path / "metrics.jsonl").write_text('{"step": 6}\nnot json\n{"step": 12}\n')
    with pytest.raises(ValueError, match="metrics.jsonl: line 2 is not a log record"):
        logger.truncate_after(12)
