"""Scripted TwoPaths expert: round the obstacle on a side drawn 50/50, with noise, then to the goal.

    python -c "from envs.experts.two_paths import generate; print(generate('data/two_paths/two_paths_expert.zarr', 200))"

Writes Diffusion Policy's zarr layout (``data/obs`` (T, 4) float32, ``data/action`` (T, 2) float32,
``meta/episode_ends``); the observation is the whole state, so train inits use ``reset_to_state = obs[0]``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from envs.experts.collect import collect_demos, write_zarr
from envs.two_paths import OBSTACLE_RADIUS, TwoPathsEnv

WAYPOINT_X = OBSTACLE_RADIUS + 0.35  # lateral clearance of the detour (before noise)


def run_expert(env: TwoPathsEnv, side: int, rng: np.random.Generator, action_noise: float = 0.01):
    """One episode on side -1 (left) or +1 (right) from the env's current state -> (obs, actions, info)."""
    waypoint = np.array([side * (WAYPOINT_X + rng.uniform(-0.05, 0.1)), rng.uniform(-0.1, 0.1)])
    obs_list, act_list = [], []
    obs, info = env._obs(), env._info()
    passed = False
    for _ in range(env.max_steps):
        # Switch to the goal once beside the obstacle; cutting the corner here still clears it by > 0.1.
        passed = passed or np.linalg.norm(env.agent - waypoint) < 0.1 or env.agent[1] > waypoint[1]
        aim = env.goal if passed else waypoint
        delta = aim - env.agent
        delta *= min(1.0, env.max_step / max(np.linalg.norm(delta), 1e-9))
        action = (env.agent + delta + rng.normal(0.0, action_noise, 2)).astype(np.float32)
        obs_list.append(obs["obs"])
        act_list.append(action)
        obs, _, terminated, truncated, info = env.step(action)
        if terminated or truncated:
            break
    return np.stack(obs_list), np.stack(act_list), info


def generate(out_path: str | Path, n: int, seed: int = 0, max_attempts: int | None = None) -> dict:
    """Write ``n`` successful expert episodes (env seeds from ``seed``, the test seeds skipped) and return statistics.

    Sides and noise come from one random stream over the attempts (seeded by ``seed``), so attempts run in order."""
    env = TwoPathsEnv(render_mode=None)
    rng = np.random.default_rng(seed)

    def attempt(episode_seed: int) -> dict:
        env.reset(seed=episode_seed)
        obs, actions, info = run_expert(env, int(rng.choice([-1, 1])), rng)
        return {"obs": obs, "action": actions, "side": info.get("side"), "success": bool(info["is_success"]),
                "length": len(actions)}

    episodes, stats = collect_demos(attempt, n, seed, task="two_paths", max_attempts=max_attempts)
    write_zarr(out_path, episodes, ["obs", "action"])
    n_left = sum(e["side"] == "left" for e in episodes)
    return stats | {"n_steps": int(sum(e["length"] for e in episodes)), "left": n_left / n, "right": (n - n_left) / n}
