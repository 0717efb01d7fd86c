"""Scripted BlockPush oracle and the demo generator behind `scripts/generate_demos.py task=block_push`.

The oracle draws, per episode, which block to push first and which target each block goes to (both uniformly),
so the demonstrations carry the task's two kinds of multimodality. It is closed-loop on the 16-D observation:
- the block's route to its target is a shortest path around the other block (visibility graph over circles);
- the effector reaches the pre-push point behind the block (on the line through the block's centre along its
  route) by its own shortest path around both blocks, so it never knocks a block on the way;
- pushing commands the contact point behind the block plus a step forward; recomputing that point from the
  observed block each step corrects lateral drift and rotation; if the effector slips off the line it re-approaches.
"""

from __future__ import annotations

import math
import time

import numpy as np
from tqdm import tqdm

from envs.block_push import (
    BLOCK_HALF,
    EFFECTOR_RADIUS,
    WORKSPACE_HIGH,
    WORKSPACE_LOW,
    BlockPushEnv,
    episode_modes,
    mode_statistics,
)
from envs.experts.collect import collect_demos, write_zarr

EFFECTOR_CLEARANCE = BLOCK_HALF * math.sqrt(2) + EFFECTOR_RADIUS + 0.015   # effector centre vs block centre
BLOCK_CLEARANCE = 2 * BLOCK_HALF * math.sqrt(2) + 0.025                     # pushed block vs the other block
STANDOFF = 0.03          # pre-push point: this far behind the contact point
ADVANCE = 0.025          # how far past the contact point a push step commands the effector
FREE_SPEED, PUSH_SPEED = 0.03, 0.02   # m per 0.1 s control step
PLACED = 0.012           # a block this close to its target centre is done (the env counts 0.05)


def _clear_matrix(a: np.ndarray, b: np.ndarray, centres: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """(A, B) bool: whether segment a_i-b_j stays outside every circle."""
    ab = b[None, :, None, :] - a[:, None, None, :]                       # (A, B, 1, 2)
    ac = centres[None, None, :, :] - a[:, None, None, :]                 # (A, 1, M, 2)
    t = np.clip((ac * ab).sum(-1) / np.maximum((ab * ab).sum(-1), 1e-12), 0.0, 1.0)
    gap = np.linalg.norm(ac - t[..., None] * ab, axis=-1)                # (A, B, M)
    return np.all(gap >= radii, axis=-1)


def shortest_path(start, goal, centres, radii, n_ring: int = 16) -> list[np.ndarray]:
    """Waypoints (goal last, start excluded) of a short collision-free 2-D path around circular obstacles.

    Circles that contain the start shrink to just inside it, so the path can only leave them; circles that
    contain the goal are ignored (the goal is where we must go). Falls back to the straight line."""
    start, goal = np.asarray(start, float), np.asarray(goal, float)
    centres = np.asarray(centres, float).reshape(-1, 2)
    radii = np.asarray(radii, float).reshape(-1)
    keep = np.linalg.norm(centres - goal, axis=1) >= radii
    centres, radii = centres[keep], radii[keep]
    radii = np.minimum(radii, np.linalg.norm(centres - start, axis=1) - 1e-4)
    if len(centres) == 0 or _clear_matrix(start[None], goal[None], centres, radii)[0, 0]:
        return [goal]
    # Polygon vertices at r / cos(pi/n) keep the polygon's edges outside its circle.
    angles = np.linspace(0, 2 * np.pi, n_ring, endpoint=False)
    ring = np.stack([np.cos(angles), np.sin(angles)], 1)
    ring = (centres[:, None] + ring[None] * (radii / math.cos(math.pi / n_ring) + 1e-3)[:, None, None]).reshape(-1, 2)
    ok = np.all(np.linalg.norm(ring[:, None] - centres[None], axis=-1) >= radii, axis=1)
    ok &= np.all((ring >= WORKSPACE_LOW) & (ring <= WORKSPACE_HIGH), axis=1)
    nodes = np.concatenate([start[None], goal[None], ring[ok]])
    cost = np.linalg.norm(nodes[:, None] - nodes[None], axis=-1)
    cost[~_clear_matrix(nodes, nodes, centres, radii)] = np.inf
    # Dijkstra on the dense graph (a few dozen nodes).
    dist = np.full(len(nodes), np.inf)
    prev = np.full(len(nodes), -1)
    done = np.zeros(len(nodes), bool)
    dist[0] = 0.0
    for _ in range(len(nodes)):
        i = int(np.argmin(np.where(done, np.inf, dist)))
        if done[i] or not np.isfinite(dist[i]) or i == 1:
            break
        done[i] = True
        better = dist[i] + cost[i] < dist
        dist[better], prev[better] = dist[i] + cost[i][better], i
    if prev[1] < 0:
        return [goal]
    path, i = [], 1
    while i != 0:
        path.append(nodes[i])
        i = prev[i]
    # A vertex the mover already sits on (it tracks commands to a few mm) would pin it there.
    path = [p for p in path[::-1] if np.linalg.norm(p - start) > 0.005]
    return path or [goal]


def _face_distance(yaw: float, u: np.ndarray) -> float:
    """Distance from a block's centre to its boundary along direction u (a square of half side BLOCK_HALF)."""
    a = math.atan2(u[1], u[0]) - yaw
    return BLOCK_HALF / max(abs(math.cos(a)), abs(math.sin(a)))


def _toward(frm: np.ndarray, to: np.ndarray, max_step: float) -> np.ndarray:
    d = to - frm
    n = float(np.linalg.norm(d))
    return to if n <= max_step else frm + d * (max_step / n)


class BlockPushOracle:
    """Closed-loop scripted pusher. ``reset(mode)`` sets the mode (first block, target of block 0), e.g. from
    ``draw_mode``; ``act(obs)`` returns the absolute effector target xy for a 16-D observation."""

    def reset(self, mode: tuple[int, int]) -> None:
        first, block0_target = mode
        if first not in (0, 1) or block0_target not in (0, 1):
            raise ValueError(f"BlockPushOracle.reset: mode must be (first block, target of block 0) in {{0, 1}}, "
                             f"got {mode}")
        self.order = [first, 1 - first]
        self.assignment = [block0_target, 1 - block0_target]   # block i -> target assignment[i]
        self.stage = 0          # index into order; 2 when both blocks are done
        self.pushing = False
        self.retreat_to: np.ndarray | None = None

    def act(self, obs: np.ndarray) -> np.ndarray:
        obs = np.asarray(obs, float)
        blocks = [obs[0:2], obs[3:5]]
        yaws = [obs[2], obs[5]]
        targets = [obs[10:12], obs[13:15]]
        eff, command = obs[6:8], obs[8:10]
        if self.retreat_to is not None:
            if np.linalg.norm(eff - self.retreat_to) > 0.01:
                return _toward(command, self.retreat_to, FREE_SPEED)
            self.retreat_to = None
        if self.stage < 2 and np.linalg.norm(blocks[self.order[self.stage]]
                                             - targets[self.assignment[self.order[self.stage]]]) <= PLACED:
            # Done with this block: back straight off it so the next approach starts clear of it.
            k = self.order[self.stage]
            self.stage += 1
            self.pushing = False
            away = eff - blocks[k]
            self.retreat_to = eff + 0.04 * away / max(np.linalg.norm(away), 1e-9)
            return _toward(command, self.retreat_to, FREE_SPEED)
        if self.stage == 2:
            return command
        k = self.order[self.stage]
        block, other, goal = blocks[k], blocks[1 - k], targets[self.assignment[k]]
        carrot = shortest_path(block, goal, [other], [BLOCK_CLEARANCE])[0]
        u = carrot - block
        dist_to_carrot = float(np.linalg.norm(u))
        u = u / max(dist_to_carrot, 1e-9)
        contact = _face_distance(yaws[k], u) + EFFECTOR_RADIUS
        rel = block - eff
        along, lateral = float(rel @ u), abs(float(rel[0] * u[1] - rel[1] * u[0]))
        if self.pushing:
            self.pushing = lateral < 0.02 and contact - 0.01 < along < contact + STANDOFF + 0.015
        else:
            self.pushing = lateral < 0.008 and contact - 0.005 < along < contact + STANDOFF + 0.01
        if self.pushing:
            # Do not overshoot: near the goal advance only as far as the block still has to go.
            advance = min(ADVANCE, dist_to_carrot + 0.005)
            return _toward(command, block - u * (contact - advance), PUSH_SPEED)
        prepush = block - u * (contact + STANDOFF)
        waypoint = shortest_path(eff, prepush, blocks, [EFFECTOR_CLEARANCE] * 2)[0]
        return _toward(command, waypoint, FREE_SPEED)


def draw_mode(rng: np.random.Generator) -> tuple[int, int]:
    """A uniformly random mode: (block pushed first, target of block 0)."""
    return int(rng.integers(2)), int(rng.integers(2))


def balanced_modes(rng: np.random.Generator):
    """Endless random modes in shuffled rounds of all four, so any run of episodes is split near 50/50 both ways
    while each episode's mode stays unpredictable from its layout."""
    combos = [(0, 0), (0, 1), (1, 0), (1, 1)]
    while True:
        for i in rng.permutation(4):
            yield combos[i]


def run_episode(env: BlockPushEnv, oracle: BlockPushOracle, seed: int, mode: tuple[int, int] | None = None) -> dict:
    """One oracle episode (mode drawn from the seed unless given); returns its observations, actions (in the env's
    action mode) and outcome."""
    obs, info = env.reset(seed=seed)
    oracle.reset(mode if mode is not None else draw_mode(np.random.default_rng(seed)))
    observations, actions, max_completed = [], [], info["n_completed"]
    done = False
    while not done:
        o = obs["obs"]
        target = np.clip(oracle.act(o), WORKSPACE_LOW, WORKSPACE_HIGH)
        action = target if env.abs_action else target - o[8:10]
        observations.append(o)
        actions.append(action.astype(np.float32))
        obs, _, terminated, truncated, info = env.step(action)
        max_completed = max(max_completed, info["n_completed"])
        done = terminated or truncated
    # The stored pairs stop before the final observation; mode statistics need it (the last block enters there).
    return {"obs": np.stack(observations), "action": np.stack(actions), "max_completed": max_completed,
            "all_obs": np.stack([*observations, obs["obs"]]),
            "success": bool(info["is_success"]), "order": list(oracle.order), "assignment": list(oracle.assignment)}


def evaluate_oracle(n: int = 100, seed: int = 200000, **env_kwargs) -> dict:
    """p1 / p2 / mean length / speed / mode split of the oracle on seeds seed .. seed + n - 1 (no data written)."""
    env, oracle = BlockPushEnv(**env_kwargs), BlockPushOracle()
    episodes, steps, start = [], 0, time.perf_counter()
    for s in tqdm(range(seed, seed + n), desc="block_push oracle"):
        episodes.append(run_episode(env, oracle, s))
        steps += len(episodes[-1]["action"])
    elapsed = time.perf_counter() - start
    env.close()
    completed = np.array([ep["max_completed"] for ep in episodes])
    stats = {"n": n, "seed": seed, "p1": float((completed >= 1).mean()), "p2": float((completed >= 2).mean()),
             "mean_length": steps / n, "steps_per_s_with_oracle": steps / elapsed,
             "failed_seeds": [seed + i for i, ep in enumerate(episodes) if not ep["success"]]}
    modes = mode_statistics([episode_modes(ep["all_obs"]) for ep in episodes])
    return stats | {f"mode_{k}": v for k, v in modes.items()}


def generate(out_path, n: int, seed: int = 0, abs_action: bool = True, max_attempts: int | None = None,
             **env_kwargs) -> dict:
    """Write ``n`` successful oracle episodes (seeds from ``seed``, the test seeds skipped) as a Diffusion Policy zarr
    store with keys ``obs`` (T, 16) and ``action`` (T, 2). Returns success rate, p1/p2, mean length and the mode
    split. Modes are dealt in balanced rounds over the attempts (``balanced_modes``), so attempts run in order."""
    modes = balanced_modes(np.random.default_rng(seed))
    env = BlockPushEnv(abs_action=abs_action, **env_kwargs)
    oracle = BlockPushOracle()
    n_placed_one = []  # per attempt, for p1

    def attempt(episode_seed: int) -> dict:
        ep = run_episode(env, oracle, episode_seed, next(modes))
        return ep | {"length": len(ep["action"])}

    try:
        episodes, stats = collect_demos(attempt, n, seed, task="block_push", max_attempts=max_attempts,
                                        on_attempt=lambda ep: n_placed_one.append(ep["max_completed"] >= 1))
    finally:
        env.close()
    write_zarr(out_path, episodes, ["obs", "action"])
    modes_kept = mode_statistics([episode_modes(ep["all_obs"]) for ep in episodes])
    return stats | {
        "p1": float(np.mean(n_placed_one)), "p2": stats["success_rate"],
        "planned_first_block0": float(np.mean([ep["order"][0] == 0 for ep in episodes])),
        "planned_b0t0_b1t1": float(np.mean([ep["assignment"] == [0, 1] for ep in episodes])),
    } | {f"mode_{k}": v for k, v in modes_kept.items()}
