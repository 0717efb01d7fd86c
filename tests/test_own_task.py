"""The ecosystem's conventions: every task env by gymnasium id, a user's own task and env from outside the repo,
wandb offline with rollout videos."""

import json
import os
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from conftest import compose_config

import envs  # noqa: F401

REPO = Path(__file__).parents[1]
TASKS = sorted(p.stem for p in (REPO / "configs" / "task").glob("*.yaml"))


def test_gymnasium_make_builds_every_task_env_by_its_id():
    built = {}
    for task in TASKS:
        env_cfg = compose_config([f"task={task}", "scale=cpu"]).task.env
        if env_cfg.id in built:
            continue
        env = gym.make(env_cfg.id, max_steps=env_cfg.max_steps, **env_cfg.kwargs)
        obs, _ = env.reset(seed=100000)
        assert env.observation_space.contains(obs), task
        built[env_cfg.id] = type(env.unwrapped).__name__
        env.close()
    assert set(built) == {f"drifting_policy/{name}" for name in envs.ENV_IDS}


USER_ENV = '''
import gymnasium as gym
import numpy as np
from gymnasium import spaces


class Reach(gym.Env):
    """A 7-D arm that should reach a target: the observation is the joint state and the target."""
    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, max_steps=20, render_mode="rgb_array"):
        self.max_steps = max_steps
        self.observation_space = spaces.Dict({"state": spaces.Box(-3, 3, (14,), np.float32)})
        self.action_space = spaces.Box(-1, 1, (7,), np.float32)

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.q, self.goal, self.t = np.zeros(7), self.np_random.uniform(-1, 1, 7), 0
        return self._obs(), {}

    def _obs(self):
        return {"state": np.concatenate([self.q, self.goal]).astype(np.float32)}

    def step(self, action):
        self.q, self.t = self.q + 0.3 * (np.clip(action, -1, 1) - self.q), self.t + 1
        score = float(np.exp(-np.linalg.norm(self.q - self.goal)))
        return self._obs(), score, False, self.t >= self.max_steps, {"score": score, "is_success": score > 0.9}

    def render(self):
        return np.zeros((16, 16, 3), np.uint8)


gym.register("myrobot/Reach-v0", entry_point="myrobot_env:Reach")
'''

USER_TASK = '''# @package _global_
task:
  name: myrobot
  shape_meta:
    obs:
      state: {shape: [14], type: low_dim}
    action: {shape: [7]}
  n_obs_steps: 2
  n_action_steps: 4
  horizon: 8
  dataset:
    path: DATA
    obs_from_store: {state: [state]}
    action_key: action
    val_ratio: 0.2
  env:
    id: "myrobot_env:myrobot/Reach-v0"
    kwargs: {}
    max_steps: 20
  eval: {n_test: 3, test_start_seed: 100000, every_epochs: 1, n_videos: 1}
training: {num_epochs: 1, batch_size: 32, warmup_steps: 1}
policy: {down_dims: [16, 32]}
'''


def test_a_task_of_your_own_trains_and_evaluates_without_editing_the_package(tmp_path):
    """A user's env module and task yaml outside the repo (--config-dir), a 7-D arm dataset, scale=auto."""
    from drifting_policy.data.replay_buffer import ReplayBuffer

    (tmp_path / "myrobot_env.py").write_text(USER_ENV)
    (tmp_path / "configs" / "task").mkdir(parents=True)
    rng, rb = np.random.default_rng(0), ReplayBuffer()
    for _ in range(5):
        goal = rng.uniform(-1, 1, 7)
        q = goal * (1 - 0.7 ** np.arange(1, 26))[:, None]
        rb.add_episode({"state": np.concatenate([q, np.repeat(goal[None], 25, 0)], 1).astype(np.float32),
                        "action": np.repeat(goal[None], 25, 0).astype(np.float32)})
    rb.save(tmp_path / "demos.zarr")
    (tmp_path / "configs" / "task" / "myrobot.yaml").write_text(USER_TASK.replace("DATA", str(tmp_path / "demos.zarr")))
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)]), "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "scripts/train_policy.py", "--config-dir", str(tmp_path / "configs"),
                          "task=myrobot", "scale=auto", f"run_dir={tmp_path / 'run'}"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    log = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert log[-1]["test/n_episodes"] == 3 and 0.0 <= log[-1]["test/mean_score"] <= 1.0
    evaluated = subprocess.run([sys.executable, "scripts/eval_policy.py", f"checkpoint={tmp_path / 'run'}",
                                "n_episodes=3", "n_videos=0", f"out={tmp_path / 'eval'}", "env_module=myrobot_env"],
                               cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    summary = json.loads((tmp_path / "eval" / "metrics.json").read_text())["summary"]
    assert summary["mean_score"] == pytest.approx(log[-1]["test/mean_score"])  # the same seeds, the same scores


def test_wandb_offline_logs_the_run_and_its_rollout_videos(tmp_path, monkeypatch):
    from conftest import pusht_like_config

    from drifting_policy.training.trainer import Trainer

    monkeypatch.delenv("WANDB_MODE", raising=False)
    cfg = pusht_like_config(tmp_path, **{"logging.wandb": "offline", "task.env.max_steps": 16, "task.eval.n_test": 2,
                                         "task.eval.n_train": 0, "task.eval.n_videos": 1})
    Trainer(cfg).run()
    runs = list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    assert list(runs[0].glob("files/media/videos/test/video_0_*.mp4"))
    assert list(runs[0].glob("*.wandb"))  # the history, for `wandb sync`
