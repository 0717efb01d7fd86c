"""A tiny gymnasium env for the rollout tests, registered as `rollout_test/Crashing-v0`: a point that moves toward
the action; on reset seed 13 its step 3 raises, on seed 14 its step 3 ends the whole process (a simulator crash)."""

import os

import gymnasium as gym
import numpy as np
from gymnasium import spaces


class CrashingEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, max_steps: int = 20, render_mode: str = "rgb_array"):
        self.max_steps, self.render_mode = max_steps, render_mode
        self.observation_space = spaces.Dict({"obs": spaces.Box(-5, 5, (4,), np.float32)})
        self.action_space = spaces.Box(-1, 1, (2,), np.float32)

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.seed_, self.t = seed, 0
        self.pos = self.np_random.uniform(-1, 1, 2)
        return self._obs(), {}

    def _obs(self):
        return {"obs": np.concatenate([self.pos, -self.pos]).astype(np.float32)}

    def step(self, action):
        self.t += 1
        if self.t == 3 and self.seed_ == 13:
            raise RuntimeError("simulator diverged")
        if self.t == 3 and self.seed_ == 14:
            os._exit(3)
        self.pos = self.pos + 0.1 * (np.asarray(action, dtype=np.float64) - self.pos)
        score = float(np.exp(-np.linalg.norm(self.pos)))
        return self._obs(), score, False, self.t >= self.max_steps, {"score": score, "final": self.pos.astype(np.float64)}

    def render(self):
        return np.zeros((8, 8, 3), np.uint8)


if "rollout_test/Crashing-v0" not in gym.registry:
    gym.register("rollout_test/Crashing-v0", entry_point="crashing_env:CrashingEnv", disable_env_checker=True)
