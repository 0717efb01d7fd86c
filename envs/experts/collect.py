"""The one loop every scripted expert's ``generate`` runs: attempt episodes until ``n`` succeed.

An expert supplies ``attempt(seed) -> dict``, one episode from ``env.reset(seed=seed)``, whose dict holds at least
``"success"`` (bool: keep it as a demonstration) and ``"length"`` (its number of steps); the expert's writer then
stores the kept episodes (Diffusion Policy zarr via ``write_zarr`` below, robomimic HDF5 via
``envs.experts.robomimic.write_episodes``). Failed attempts are dropped, but not before ``on_attempt`` has seen
them, so statistics over every attempt (BlockPush's p1, Kitchen's per-subtask completion) come from the same loop.

Attempt i runs seed ``seed + i``, except that the benchmark's test seeds are skipped: a demonstration from a test
seed would put that evaluation layout into the training data.
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from tqdm import tqdm

# The benchmark's evaluation seeds (every task config's eval.test_start_seed 100000, n_test <= 50).
TEST_SEEDS = range(100_000, 100_050)


def demo_seeds(seed: int, count: int) -> list[int]:
    """The episode seeds of the first ``count`` attempts from ``seed``: seed, seed + 1, ..., test seeds skipped."""
    if seed < 0:
        raise ValueError(f"demo seeds must be >= 0 (numpy's seeding refuses negatives), got seed={seed}")
    seeds, s = [], seed
    while len(seeds) < count:
        if s in TEST_SEEDS:
            s = TEST_SEEDS.stop
        seeds.append(s)
        s += 1
    return seeds


def attempt_budget(n: int, max_attempts: int | None = None) -> int:
    """How many attempts ``n`` demonstrations may take: ``max_attempts`` if given, else 3n + 20 (every expert
    succeeds in well over half its attempts, ToolHang's ~0.8 the lowest; the 20 covers bad luck at small n)."""
    return int(max_attempts) if max_attempts is not None else 3 * n + 20


def collect_demos(attempt: Callable[[int], dict], n: int, seed: int = 0, *, task: str,
                  max_attempts: int | None = None, workers: int = 1,
                  on_attempt: Callable[[dict], None] | None = None) -> tuple[list[dict], dict]:
    """Run ``attempt`` on successive demo seeds until ``n`` episodes succeed; returns them (in seed order) and stats.

    ``workers`` > 1 runs attempts in that many spawned processes (``attempt`` must then be picklable, e.g. a
    module-level function or a functools.partial of one, and depend on its seed alone); results are still taken in
    seed order, so the kept episodes do not depend on the worker count. With one worker ``attempt`` may carry state
    from one attempt to the next (a shared random stream), as it is called in seed order.

    Stats: n_episodes, attempts, success_rate, mean_length (of the kept episodes), seconds (the collection),
    seconds_per_episode (per attempt, failed ones included), episode_seeds (of the kept episodes).
    Raises RuntimeError naming the task, the successes and the attempts when the budget (``attempt_budget``) runs out.
    """
    if n < 1:
        raise ValueError(f"{task} demos: n must be >= 1, got {n}")
    if workers < 1:
        raise ValueError(f"{task} demos: workers must be >= 1, got {workers}")
    seeds = demo_seeds(seed, attempt_budget(n, max_attempts))
    episodes, kept_seeds, attempts = [], [], 0
    start = time.perf_counter()
    pool = multiprocessing.get_context("spawn").Pool(workers) if workers > 1 else None
    # imap hands results back in submission order, whatever order the workers finish in
    results = pool.imap(attempt, seeds) if pool is not None else map(attempt, seeds)
    bar = tqdm(total=n, desc=f"{task} demos", unit="ep")
    try:
        for s, result in zip(seeds, results):
            attempts += 1
            if on_attempt is not None:
                on_attempt(result)
            if result["success"]:
                episodes.append(result)
                kept_seeds.append(s)
                bar.update(1)
            bar.set_postfix(success_rate=f"{len(episodes) / attempts:.3f}")
            if len(episodes) == n:
                break
    finally:
        bar.close()
        if pool is not None:
            pool.terminate()  # the workers may be running attempts past the n-th success
    if len(episodes) < n:
        raise RuntimeError(f"{task} demos: only {len(episodes)} of {n} episodes succeeded in {attempts} attempts "
                           f"(seeds {seeds[0]}..{seeds[-1]}); nothing was written. Pass a larger max_attempts or "
                           "check the expert.")
    seconds = time.perf_counter() - start
    return episodes, {
        "n_episodes": n,
        "attempts": attempts,
        "success_rate": n / attempts,
        "mean_length": float(np.mean([e["length"] for e in episodes])),
        "seconds": seconds,
        "seconds_per_episode": seconds / attempts,
        "episode_seeds": kept_seeds,
    }


def write_zarr(out_path: str | Path, episodes: list[dict], keys: list[str]) -> None:
    """The episodes' ``keys`` arrays as a Diffusion Policy zarr store (written atomically by ReplayBuffer.save).

    One concatenation at the end: appending episode by episode copies everything stored so far each time."""
    from drifting_policy.data.replay_buffer import ReplayBuffer

    data = {k: np.concatenate([e[k] for e in episodes]) for k in keys}
    ReplayBuffer(data, np.cumsum([len(e[keys[0]]) for e in episodes])).save(out_path)
