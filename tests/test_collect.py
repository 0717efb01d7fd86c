"""The one demo-collection loop (envs/experts/collect.py): seeds, test-seed skipping, budget, worker pool."""

import functools

import numpy as np
import pytest

from drifting_policy.data.replay_buffer import ReplayBuffer
from envs import demo_generator
from envs.experts.collect import TEST_SEEDS, collect_demos, demo_seeds
from envs.experts.two_paths import run_expert
from envs.two_paths import TwoPathsEnv


def test_demo_seeds_skip_the_test_seeds():
    assert demo_seeds(7, 3) == [7, 8, 9]
    assert demo_seeds(99_998, 4) == [99_998, 99_999, 100_050, 100_051]
    assert demo_seeds(100_010, 2) == [100_050, 100_051]
    assert not set(demo_seeds(99_000, 2_000)) & set(TEST_SEEDS)
    with pytest.raises(ValueError, match="seed=-1"):
        demo_seeds(-1, 3)


def test_generated_demos_cross_the_test_range_without_using_it(tmp_path):
    """The cheapest expert, started just below the test seeds: its episodes come from the seeds it reports, and
    none of them is a test seed."""
    path = tmp_path / "two_paths.zarr"
    stats = demo_generator("two_paths")(path, 15, seed=99_990)
    seeds = stats["episode_seeds"]
    assert len(seeds) == 15 and not set(seeds) & set(TEST_SEEDS) and max(seeds) >= TEST_SEEDS.stop
    assert seeds == sorted(seeds) and set(seeds) <= set(demo_seeds(99_990, stats["attempts"]))
    buffer = ReplayBuffer.load(path)
    env = TwoPathsEnv(render_mode=None)
    for i, s in enumerate(seeds):  # each stored episode starts where reset(seed) puts the env
        obs, _ = env.reset(seed=s)
        np.testing.assert_array_equal(buffer.get_episode(i)["obs"][0], obs["obs"])


def _two_paths_attempt(seed: int, max_steps: int) -> dict:
    """A TwoPaths demo from its seed alone (module level: the worker processes unpickle it)."""
    env = TwoPathsEnv(max_steps=max_steps, render_mode=None)
    env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    obs, actions, info = run_expert(env, int(rng.choice([-1, 1])), rng)
    return {"obs": obs, "action": actions, "success": bool(info["is_success"]), "length": len(actions)}


def test_worker_pool_keeps_seed_order():
    # a horizon near the expert's mean length (~48 steps) fails some attempts, so dropped ones are in the mix
    attempt = functools.partial(_two_paths_attempt, max_steps=48)
    serial, serial_stats = collect_demos(attempt, 6, 40, task="two_paths")
    pooled, pooled_stats = collect_demos(attempt, 6, 40, task="two_paths", workers=2)
    assert serial_stats["attempts"] > 6
    assert serial_stats["episode_seeds"] == pooled_stats["episode_seeds"]
    assert serial_stats["attempts"] == pooled_stats["attempts"]
    for a, b in zip(serial, pooled, strict=True):
        np.testing.assert_array_equal(a["action"], b["action"])


def test_budget_runs_out_with_an_error_naming_task_successes_and_attempts(tmp_path):
    out = tmp_path / "pusht.zarr"
    with pytest.raises(RuntimeError, match=r"pusht demos: only 0 of 2 episodes succeeded in 3 attempts"):
        demo_generator("pusht")(out, 2, seed=0, render_images=False, max_steps=5, max_attempts=3)
    assert not out.exists()  # nothing written
