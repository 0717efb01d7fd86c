"""The trainer: exact resume, DDP on CPU, run folder contents, config and checkpoint errors."""

import json
import os
import socket
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import compose_config
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf
from safetensors.torch import load_file

from drifting_policy.factory import checkpoint_folder as resolve_checkpoint
from drifting_policy.factory import load_policy
from drifting_policy.training.trainer import Trainer


def test_killed_run_resumes_to_the_same_parameters_as_an_uninterrupted_run(tiny_cfg, monkeypatch):
    full = tiny_cfg(run_name="uninterrupted")
    full.training.num_epochs = 3
    Trainer(full).run()

    interrupted = tiny_cfg()
    interrupted.training.num_epochs = 3
    original = Trainer.train_epoch

    def die_in_third_epoch(self, epoch):
        if epoch == 2:
            raise KeyboardInterrupt  # killed after the epoch-2 checkpoint was written
        return original(self, epoch)

    monkeypatch.setattr(Trainer, "train_epoch", die_in_third_epoch)
    with pytest.raises(KeyboardInterrupt):
        Trainer(interrupted).run()
    monkeypatch.setattr(Trainer, "train_epoch", original)
    interrupted.training.resume = True
    Trainer(interrupted).run()

    a = load_file(resolve_checkpoint(full.run_dir) / "model.safetensors")
    b = load_file(resolve_checkpoint(interrupted.run_dir) / "model.safetensors")
    ema_a = load_file(resolve_checkpoint(full.run_dir) / "ema.safetensors")
    ema_b = load_file(resolve_checkpoint(interrupted.run_dir) / "ema.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
        torch.testing.assert_close(ema_a[k], ema_b[k], rtol=0, atol=0)
    steps = [json.loads(line)["epoch"] for line in open(os.path.join(interrupted.run_dir, "metrics.jsonl"))]
    assert steps == [1, 2, 3]


def test_neighbour_batches_feed_knn_positives_and_resume_the_same_batches(tiny_cfg):
    cfg = tiny_cfg()
    cfg.training.neighbour_batches = 4
    cfg.policy.positives, cfg.policy.knn_k = "knn", 4
    trainer = Trainer(cfg)
    first = [b["action"] for b in trainer._loader(epoch=1)]
    assert len(first) == trainer.steps_per_epoch
    again = [b["action"] for b in Trainer(cfg)._loader(epoch=1)]
    assert all(torch.equal(a, b) for a, b in zip(first, again))  # a resumed run draws the same batches
    trainer.run()
    records = [json.loads(line) for line in open(os.path.join(cfg.run_dir, "metrics.jsonl"))]
    assert all(torch.isfinite(torch.tensor(r["train_loss"])) for r in records)


def test_trainer_feeds_the_skip_schedule_to_both_policies_and_saves_it(tiny_cfg):
    cfg = tiny_cfg(extra=["policy.noise_skip=1.0", "policy.noise_skip_anneal=0.5"])
    trainer = Trainer(cfg)
    trainer.run()
    assert trainer.policy.current_noise_skip() == 0.0 and trainer.ema.module.current_noise_skip() == 0.0
    assert load_file(resolve_checkpoint(cfg.run_dir) / "ema.safetensors")["train_progress"].item() == 1.0
    assert load_policy(resolve_checkpoint(cfg.run_dir))[0].current_noise_skip() == 0.0


def test_a_warmup_longer_than_half_the_run_is_flagged(tiny_cfg):
    cfg = tiny_cfg()
    cfg.training.warmup_steps = 100  # the run has 2 epochs of 6 steps
    with pytest.warns(UserWarning, match="warmup_steps = 100 is more than half of the run's 12 optimiser steps"):
        Trainer(cfg)


def test_run_folder_has_config_checkpoint_and_metrics(tiny_cfg):
    cfg = tiny_cfg("diffusion")
    Trainer(cfg).run()
    ckpt = resolve_checkpoint(cfg.run_dir)
    assert ckpt.name == "epoch_0002"
    assert {p.name for p in ckpt.iterdir()} == {"model.safetensors", "ema.safetensors", "config.yaml", "training_state"}
    assert not list(ckpt.parent.glob("*.tmp"))
    records = [json.loads(line) for line in open(os.path.join(cfg.run_dir, "metrics.jsonl"))]
    assert [r["epoch"] for r in records] == [1, 2] and all("train_loss" in r for r in records)


def test_two_process_torchrun_trains_on_cpu(tiny_cfg, tmp_path):
    cfg = tiny_cfg()
    cfg.training.num_epochs = 1
    cfg_path = tmp_path / "cfg.yaml"
    OmegaConf.save(cfg, cfg_path)
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    with socket.socket() as s:  # a free port, so parallel test workers never collide
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}",
                           os.path.join(os.path.dirname(__file__), "ddp_train_entry.py"), str(cfg_path)],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (resolve_checkpoint(cfg.run_dir) / "model.safetensors").exists()


def test_unknown_config_key_is_rejected():
    with pytest.raises(ConfigCompositionException, match="not_a_key"):
        compose_config(["training.not_a_key=1"])


def test_a_checkpoint_from_another_task_is_refused(tiny_cfg):
    cfg = tiny_cfg()
    cfg.training.num_epochs = 1
    Trainer(cfg).run()
    with pytest.raises(ValueError, match="trained on task 'synthetic', not 'pusht_state'"):
        load_policy(cfg.run_dir, task="pusht_state")
    policy, loaded = load_policy(cfg.run_dir, task="synthetic")
    assert loaded.task.name == "synthetic" and not policy.training


def test_checkpoint_weights_that_do_not_fit_the_model_name_the_file(tiny_cfg, tmp_path):
    cfg = tiny_cfg()
    cfg.training.num_epochs = 1
    Trainer(cfg).run()
    ckpt = resolve_checkpoint(cfg.run_dir)
    conf = OmegaConf.load(ckpt / "config.yaml")
    conf.policy.down_dims = [8, 16]
    OmegaConf.save(conf, ckpt / "config.yaml")
    with pytest.raises(ValueError, match="ema.safetensors does not match the model"):
        load_policy(ckpt)


def test_a_checkpoint_evaluates_from_eval_policy_script(tmp_path):
    """Train one epoch on a PushT-shaped synthetic store, then roll the checkpoint out in the real PushT env."""
    from conftest import pusht_like_config

    cfg = pusht_like_config(tmp_path)
    Trainer(cfg).run()
    out = tmp_path / "eval"
    proc = subprocess.run([sys.executable, "scripts/eval_policy.py", f"checkpoint={cfg.run_dir}", "n_episodes=2",
                           "seed_start=100000", "n_videos=1", f"out={out}", "task=pusht_state"],
                          capture_output=True, text=True, timeout=300, cwd=os.path.dirname(os.path.dirname(__file__)))
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["summary"]["n_episodes"] == 2 and len(metrics["episodes"]) == 2
    assert all(e["length"] == 24 and 0.0 <= e["score"] <= 1.0 for e in metrics["episodes"])
    assert [e["reset"]["seed"] for e in metrics["episodes"]] == [100000, 100001]
    assert (out / "videos" / "episode_000.mp4").stat().st_size > 0
    assert np.isfinite(metrics["summary"]["mean_score"])


def test_command_line_beats_task_settings_and_per_policy_settings_apply_to_their_policy():
    cfg = compose_config(["task=pusht_visual", "scale=cpu", "training.num_epochs=7"])
    assert cfg.training.num_epochs == 7 and cfg.scale == "cpu"
    assert cfg.training.batch_size == 64  # pusht_visual's own setting, not the generic 256
    assert cfg.policy.down_dims == [32, 64, 128]  # the cpu scale over the task's paper-scale [512, 1024, 2048]
    drifting = compose_config(["task=block_push", "policy=drifting", "scale=cpu"])
    diffusion = compose_config(["task=block_push", "policy=diffusion", "scale=cpu"])
    assert drifting.policy.n_samples == 2 and "n_samples" not in diffusion.policy  # task_policy/block_push_drifting
    assert (drifting.training.num_epochs, diffusion.training.num_epochs) == (30, 60)  # task_scale_policy/..._diffusion


def test_a_task_without_a_cpu_scale_trains_as_written_at_scale_cpu():
    paper = compose_config(["task=two_paths", "scale=paper"])
    assert compose_config(["task=two_paths", "scale=cpu"]).training.num_epochs == 15  # it has one
    cfg = compose_config(["task=pusht_state", "scale=cpu", "~task_scale"])  # as if it had none
    assert cfg.training.num_epochs == 4500 and cfg.policy.down_dims == paper.policy.down_dims


@pytest.mark.parametrize("scale", ["paper", "cpu"])
def test_every_task_config_composes_for_every_policy(scale):
    from pathlib import Path

    tasks = sorted(p.stem for p in (Path(__file__).parents[1] / "configs" / "task").glob("*.yaml"))
    assert {"pusht_state", "pusht_visual"} <= set(tasks)
    for task in tasks:
        for policy in ("drifting", "diffusion", "bc"):
            cfg = compose_config([f"task={task}", f"policy={policy}", f"scale={scale}"])
            horizon = cfg.task.horizon
            assert cfg.scale == scale
            assert cfg.task.n_obs_steps - 1 + cfg.task.n_action_steps <= horizon, task
            assert horizon % 2 ** (len(cfg.policy.down_dims) - 1) == 0, task
            assert set(cfg.task.shape_meta.obs) == set(cfg.task.dataset.obs_from_store), task


def test_a_crash_during_evaluation_keeps_the_training_and_the_resumed_run_evaluates_that_epoch_first(
        tiny_cfg, monkeypatch):
    cfg = tiny_cfg()
    cfg.task.eval.n_test = 2  # the synthetic task has no simulator ("none"): its first evaluation raises
    cfg.training.checkpoint_every = 50
    with pytest.raises(gym.error.Error):
        Trainer(cfg).run()
    state = json.loads((resolve_checkpoint(cfg.run_dir) / "training_state" / "state.json").read_text())
    assert state["epoch"] == 1 and state["global_step"] > 0 and "train_loss" in state["pending_eval"]

    evaluated = []

    def rollouts_that_work(self, epoch):
        evaluated.append(epoch)
        return {"test/mean_score": 0.5, "test/success_rate": 0.5}

    monkeypatch.setattr(Trainer, "evaluate", rollouts_that_work)
    cfg.training.resume = True
    Trainer(cfg).run()
    assert evaluated == [1, 2]  # the interrupted epoch-1 evaluation, then epoch 2's; no epoch trained twice
    logs = [json.loads(line) for line in open(os.path.join(cfg.run_dir, "metrics.jsonl"))]
    assert [row["epoch"] for row in logs] == [1, 2] and all("train_loss" in row and "test/mean_score" in row
                                                          for row in logs)


def test_evaluation_is_deterministic_given_seeds_and_matches_the_trainers_own(tmp_path):
    """The same checkpoint on the same test seeds gives identical episodes every time, whatever torch's global RNG
    holds, and equals the trainer's evaluation of that epoch; another sampling seed changes the episodes."""
    from conftest import pusht_like_config

    from drifting_policy.evaluation.evaluate import evaluate_checkpoint

    # wide samples (noise_skip): the sampling noise visibly moves the agent
    cfg = pusht_like_config(tmp_path, **{"task.eval.n_test": 3, "policy.noise_skip": 1.0})
    Trainer(cfg).run()
    log = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    ckpt = tmp_path / "run" / "checkpoints" / "epoch_0001"

    def episodes(name, **kwargs):
        evaluate_checkpoint(ckpt, n_episodes=3, n_videos=0, out=tmp_path / name, **kwargs)
        return json.loads((tmp_path / name / "metrics.json").read_text())["episodes"]

    first = episodes("a")
    torch.manual_seed(1234)  # a different global RNG state must not matter
    second = episodes("b")
    other = episodes("c", sampling_seed=1)
    assert first == second
    assert [e["state"] for e in first] != [e["state"] for e in other]
    assert log[-1]["test/mean_score"] == pytest.approx(np.mean([e["score"] for e in first]), abs=1e-12)


def ddp_case():
    """A tiny drifting policy (seeded) and a fixed global batch of 8 observations with their noise."""
    from drifting_policy.policies.drifting import DriftingPolicy

    torch.manual_seed(0)
    meta = {"obs": {"obs": {"shape": [4], "type": "low_dim"}}, "action": {"shape": [2]}}
    policy = DriftingPolicy(meta, 2, 4, 8, down_dims=[16, 32], n_samples=4)
    obs = torch.randn(8, 2, 4)
    action = torch.randn(8, 8, 2)
    policy.normalizer.fit({"obs": obs.flatten(0, 1), "action": action.flatten(0, 1)}, {})
    return policy, {"obs": {"obs": obs}, "action": action, "noise": torch.randn(8, 4, 8, 2)}


def test_two_process_drifting_loss_and_gradients_equal_one_process_on_the_global_batch(tmp_path):
    policy, batch = ddp_case()
    loss, _ = policy.compute_loss(batch)
    loss.backward()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "ddp.safetensors"
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}",
                           os.path.join(os.path.dirname(__file__), "ddp_drifting_entry.py"), str(out)],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ddp = load_file(out)
    assert ddp.pop("__loss__").item() == pytest.approx(loss.item(), abs=1e-5)
    grads = {n: p.grad for n, p in policy.named_parameters() if p.grad is not None}
    assert ddp.keys() == grads.keys()
    for name, g in grads.items():
        torch.testing.assert_close(ddp[name], g, rtol=0, atol=1e-5, msg=name)


def test_cfg_job_prints_exactly_the_config_the_run_saves_and_uses(tmp_path):
    """`--cfg job` (hydra's composed config), the run's .hydra/config.yaml and the checkpoint's config.yaml agree."""
    from conftest import make_lowdim_store

    store = make_lowdim_store(tmp_path / "pusht_like.zarr", obs_dim=20)
    args = [sys.executable, "scripts/train_policy.py", "task=pusht_state", "scale=cpu", f"run_dir={tmp_path / 'run'}",
            f"task.dataset.path={store}", "task.dataset.obs_from_store={obs: [obs]}", "task.dataset.init_state_key=null",
            "training.num_epochs=1", "task.eval.n_test=0", "policy.down_dims=[8,16]"]
    repo = os.path.dirname(os.path.dirname(__file__))
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    printed = subprocess.run(args + ["--cfg", "job"], capture_output=True, text=True, timeout=300, cwd=repo, env=env)
    assert printed.returncode == 0, printed.stderr[-2000:]
    run = subprocess.run(args, capture_output=True, text=True, timeout=300, cwd=repo, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    as_dict = lambda c: OmegaConf.to_container(c, resolve=True)  # noqa: E731
    shown = as_dict(OmegaConf.create(printed.stdout))
    assert shown["scale"] == "cpu" and shown["training"]["batch_size"] == 64  # the cpu scale, composed by hydra
    assert shown == as_dict(OmegaConf.load(tmp_path / "run" / ".hydra" / "config.yaml"))
    assert shown == as_dict(OmegaConf.load(resolve_checkpoint(tmp_path / "run") / "config.yaml"))
