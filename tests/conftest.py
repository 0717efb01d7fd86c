"""Shared fixtures: tiny synthetic datasets and configs made in tmp_path (real files, real code paths)."""

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import envs  # noqa: F401  (picks MuJoCo's GL backend and loads triton before any test imports a simulator)
from drifting_policy.data.replay_buffer import ReplayBuffer

CONFIG_DIR = str((__import__("pathlib").Path(__file__).parents[1] / "configs").resolve())


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def make_lowdim_store(path, n_episodes=6, length=20, obs_dim=4, action_dim=2, seed=0):
    """Episodes whose action is a smooth function of the observation, so a policy can learn it."""
    rng = np.random.default_rng(seed)
    rb = ReplayBuffer()
    for _ in range(n_episodes):
        obs = np.cumsum(rng.normal(0, 0.1, (length, obs_dim)), 0).astype(np.float32)
        rb.add_episode({"obs": obs, "action": np.tanh(obs[:, :action_dim] * 2).astype(np.float32),
                        "state": obs})
    rb.save(path)
    return path


def compose_config(overrides):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name="train_policy", overrides=overrides)


@pytest.fixture
def tiny_cfg(tmp_path):
    """A full train_policy config on a synthetic low-dim store, tiny network, no rollouts."""
    store = make_lowdim_store(tmp_path / "demo.zarr")

    def build(policy="drifting", extra=(), run_name=None):
        run_dir = tmp_path / (run_name or policy)
        cfg = compose_config([f"policy={policy}", "scale=paper", f"run_dir={run_dir}"] + list(extra))
        task = {
            "name": "synthetic", "n_obs_steps": 2, "n_action_steps": 4, "horizon": 8,
            "shape_meta": {"obs": {"obs": {"shape": [4], "type": "low_dim"}}, "action": {"shape": [2]}},
            "dataset": {"path": str(store), "obs_from_store": {"obs": ["obs"]}, "action_key": "action",
                        "val_ratio": 0.2, "max_train_episodes": None},
            "env": {"id": "drifting_policy/None-v0", "max_steps": 10},
            "eval": {"n_test": 0, "test_start_seed": 100000, "every_epochs": 1, "n_videos": 0},
        }
        OmegaConf.set_struct(cfg, False)
        cfg.task = task
        cfg.policy.down_dims = [16, 32]
        cfg.training.update({"num_epochs": 2, "batch_size": 16, "warmup_steps": 2, "checkpoint_every": 1})
        return cfg

    return build


def pusht_like_config(tmp_path, **overrides):
    """The real pusht_state task (its env, its evaluation) on a 20-D synthetic store in ``tmp_path``, a tiny U-Net,
    one epoch of batch 32; ``overrides`` {"section.key": value} adjust it (e.g. {"task.eval.n_test": 3})."""
    store = make_lowdim_store(tmp_path / "pusht_like.zarr", obs_dim=20)
    cfg = compose_config(["task=pusht_state", "scale=paper", f"run_dir={tmp_path / 'run'}"])
    cfg.task.dataset.update({"path": str(store), "obs_from_store": {"obs": ["obs"]}, "init_state_key": None})
    cfg.task.env.max_steps = 24
    cfg.task.eval.update({"n_test": 0, "n_videos": 0, "every_epochs": 1})
    cfg.policy.down_dims = [16, 32]
    cfg.training.update({"num_epochs": 1, "batch_size": 32, "warmup_steps": 1})
    for key, value in overrides.items():
        OmegaConf.update(cfg, key, value)
    return cfg
