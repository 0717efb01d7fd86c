"""Scripted PushT expert and the demo generator that writes Diffusion Policy's pusht zarr layout.

The block is quasi-static (gym-pusht's space damping 0 removes all velocity every physics step) and the agent is a
kinematic disc, so a push's outcome is fully determined by the agent's target sequence. The expert therefore plans
by simulation: in a private pymunk copy of the scene (the env's space cannot be copied) it tries pushes from contact
points on the T outline along a few directions, scores the pose after every step of each push, and executes one of
the near-best pushes, chosen at random so that demonstrations vary. It reaches the push start along a path around
the inflated T (a visibility graph over its buffered outline), so approaching never disturbs the block.
"""

from __future__ import annotations

import math
import time

import numpy as np
import pymunk
import shapely
from gym_pusht.envs.pusht import PushTEnv as _GymPushTEnv
from shapely.geometry import LineString, Point, Polygon
from shapely.ops import nearest_points, unary_union
from tqdm import tqdm

from envs.experts.collect import collect_demos, write_zarr
from envs.geometry import planar_transform
from envs.pusht import SUBSTEPS, PushTEnv

AGENT_RADIUS = 15.0
MARGIN = 5.0  # clearance (px) kept between the agent disc and the T while travelling
GOAL_POSE = (256.0, 256.0, math.pi / 4)
K_P, K_V, DT = 100.0, 20.0, 0.01  # gym-pusht's PD gains and physics step
# The T outline in the body frame, counter-clockwise in pixel coordinates (y down): bar x in [-60, 60], y in [0, 30];
# stem x in [-15, 15], y in [30, 120].
T_OUTLINE = np.array([(-60, 0), (60, 0), (60, 30), (15, 30), (15, 120), (-15, 120), (-15, 30), (-60, 30)], float)
T_RECTS = [[(-60, 0), (60, 0), (60, 30), (-60, 30)], [(-15, 30), (15, 30), (15, 120), (-15, 120)]]


def _outline_contacts(spacing: float = 10.0) -> tuple[np.ndarray, np.ndarray]:
    """Contact points (N, 2) evenly along each outline edge, with their outward unit normals (N, 2), body frame."""
    points, normals = [], []
    for a, b in zip(T_OUTLINE, np.roll(T_OUTLINE, -1, axis=0), strict=True):
        length = np.linalg.norm(b - a)
        tangent = (b - a) / length
        normal = np.array([tangent[1], -tangent[0]])
        mid = (a + b) / 2
        if Polygon(T_OUTLINE).contains(Point(*(mid + normal))):  # make the normal point out of the T
            normal = -normal
        n = max(1, int(length // spacing))
        for t in (np.arange(n) + 0.5) / n:
            points.append(a + t * (b - a))
            normals.append(normal)
    return np.array(points), np.array(normals)


CONTACTS, NORMALS = _outline_contacts()


GOAL_OUTLINE = planar_transform(T_OUTLINE, GOAL_POSE)


_CORNERS = [tuple(p) for p in T_OUTLINE]
_GOAL_CORNERS = [tuple(p) for p in GOAL_OUTLINE]


def pose_cost(pose) -> float:
    """Mean distance (px) of the T's 8 corners from where they sit at the goal (0 exactly on the goal)."""
    x, y, angle = pose
    c, s = math.cos(angle), math.sin(angle)
    total = 0.0
    for (u, v), (gx, gy) in zip(_CORNERS, _GOAL_CORNERS, strict=True):  # plain floats: called ~10^5 times a demo
        total += math.hypot(x + c * u - s * v - gx, y + s * u + c * v - gy)
    return total / len(_CORNERS)


class PushSimulator:
    """A private pymunk scene built with gym-pusht's own constructors, stepped with the env's PD controller."""

    def __init__(self):
        self.space = pymunk.Space()
        self.space.gravity = 0, 0
        self.space.damping = 0.0
        self.space.add(*[_GymPushTEnv.add_segment(self.space, a, b, 2) for a, b in
                         [((5, 506), (5, 5)), ((5, 5), (506, 5)), ((506, 5), (506, 506)), ((5, 506), (506, 506))]])
        self.agent = _GymPushTEnv.add_circle(self.space, (256, 400), AGENT_RADIUS)
        self.block, _ = _GymPushTEnv.add_tee(self.space, (256, 300), 0)

    def rollout(self, block_pose, agent_pos, agent_vel, targets, stop_above: float = np.inf) -> list[tuple]:
        """Block poses after each target in ``targets`` (one 10 Hz control step each), from a resting block.

        Stops early once the cost exceeds the best seen so far by ``stop_above`` (a push going the wrong way).
        """
        self.block.angle = block_pose[2]
        self.block.position = (block_pose[0], block_pose[1])
        self.block.velocity, self.block.angular_velocity = (0.0, 0.0), 0.0
        self.agent.position, self.agent.velocity = tuple(agent_pos), tuple(agent_vel)
        self.space.reindex_shapes_for_body(self.block)
        self.space.reindex_shapes_for_body(self.agent)
        # the agent is kinematic, so its path does not depend on the block: integrate the env's PD law in floats
        # (same operations as gym-pusht) and only hand pymunk the velocity
        (px, py), (vx, vy) = agent_pos, agent_vel
        agent, step = self.agent, self.space.step
        poses, best = [], np.inf
        for tx, ty in targets:
            for _ in range(SUBSTEPS):
                vx += (K_P * (tx - px) + K_V * (0.0 - vx)) * DT
                vy += (K_P * (ty - py) + K_V * (0.0 - vy)) * DT
                agent.velocity = (vx, vy)
                step(DT)
                px, py = px + vx * DT, py + vy * DT
            pose = (*self.block.position, self.block.angle)
            poses.append(pose)
            cost = pose_cost(pose)
            best = min(best, cost)
            if cost > best + stop_above:
                break
        return poses


class Obstacle:
    """The T inflated by the agent radius plus a margin, and shortest paths around it (visibility graph)."""

    def __init__(self, block_pose, margin: float = MARGIN):
        t = unary_union([Polygon(planar_transform(np.array(r, float), block_pose)) for r in T_RECTS])
        self.body = t
        self.keep_out = t.buffer(AGENT_RADIUS + margin, join_style="mitre")
        self.prepared = shapely.prepared.prep(self.keep_out)
        ring = t.buffer(AGENT_RADIUS + margin + 2, join_style="mitre").exterior.coords[:-1]
        self.nodes = [np.array(p) for p in ring if 0 <= p[0] <= 512 and 0 <= p[1] <= 512]

    def _free(self, a, b) -> bool:
        return not self.prepared.intersects(LineString([a, b]))

    def path(self, start, goal) -> list[np.ndarray] | None:
        """Waypoints from ``start`` to ``goal`` (outside the keep-out zone) around it, or None if there is none.

        A start inside the zone (the agent has just pushed) first backs straight out of it.
        """
        start, goal = np.asarray(start, float), np.asarray(goal, float)
        out = []
        if self.prepared.contains(Point(*start)):  # just finished a push: back straight off the block first
            exit_point = nearest_points(self.keep_out.exterior, Point(*start))[0]
            direction = np.array(exit_point.coords[0]) - start
            start = start + direction * (1 + 3 / max(np.linalg.norm(direction), 1e-6))
            out.append(start)
        if self._free(start, goal):
            return [*out, goal]
        nodes = [start, *self.nodes, goal]
        n = len(nodes)
        dist = np.full(n, np.inf)
        prev = [-1] * n
        dist[0] = 0.0
        done = np.zeros(n, bool)
        for _ in range(n):  # Dijkstra on a ~10-node graph
            i = int(np.argmin(np.where(done, np.inf, dist)))
            if not np.isfinite(dist[i]) or i == n - 1:
                break
            done[i] = True
            for j in range(n):
                if not done[j] and self._free(nodes[i], nodes[j]):
                    d = dist[i] + np.linalg.norm(nodes[j] - nodes[i])
                    if d < dist[j]:
                        dist[j], prev[j] = d, i
        if not np.isfinite(dist[-1]):
            return None
        chain, i = [], n - 1
        while i > 0:
            chain.append(nodes[i])
            i = prev[i]
        return [*out, *chain[::-1]]


class PushTExpert:
    """Closed-loop expert: plan a push by simulation, walk around the T to its start, execute it, replan.

    Variation between demonstrations comes from ``rng``: a random subset of contact points per plan, a random choice
    among the ``top_k`` near-best pushes, and jittered push speed.
    """

    def __init__(self, rng: np.random.Generator, top_k: int = 3, contact_fraction: float = 0.6,
                 directions_deg: tuple[float, ...] = (-25.0, 0.0, 25.0), gap: float = 4.0, time_weight: float = 0.005,
                 waypoint_tol: float = 8.0, start_tol: float = 4.0, lead: float | None = 60.0):
        self.rng = rng
        self.top_k = top_k
        self.contact_fraction = contact_fraction
        self.directions = np.deg2rad(directions_deg)
        self.gap = gap
        self.time_weight = time_weight  # cost (px) a step must save to be worth taking, per px of current cost
        # how close the agent must come to a path corner before heading on, and to the push start before pushing
        # (the push is re-simulated from wherever the agent then is, so no need to settle exactly)
        self.waypoint_tol, self.start_tol = waypoint_tol, start_tol
        self.lead = lead
        self.sim = PushSimulator()
        self.reset()

    def reset(self) -> None:
        self.waypoints: list[np.ndarray] = []
        self.push: dict | None = None
        self.queue: list[np.ndarray] = []
        self.approach_steps = 0

    # ---- planning ----------------------------------------------------------------------------------------------
    def _plan(self, block_pose, agent_pos) -> list[dict]:
        """Candidate pushes, the preferred first."""
        cost0 = pose_cost(block_pose)
        speed = float(np.clip(0.2 * cost0, 2.5, 12.0) * self.rng.uniform(0.85, 1.15))  # target advance per step
        reach = float(np.clip(1.2 * cost0, 10.0, 90.0))
        n_targets = int(math.ceil((reach + self.gap) / speed)) + 2
        weight = self.time_weight * cost0
        body = Obstacle(block_pose).body
        c, s = math.cos(block_pose[2]), math.sin(block_pose[2])
        rot = np.array([[c, s], [-s, c]])
        points = planar_transform(CONTACTS, block_pose)
        normals = NORMALS @ rot
        chosen = self.rng.random(len(points)) < self.contact_fraction
        options = []
        for p, n in zip(points[chosen], normals[chosen], strict=True):
            start = p + n * (AGENT_RADIUS + self.gap)
            if not (8 <= start[0] <= 504 and 8 <= start[1] <= 504):
                continue
            if body.distance(Point(*start)) < AGENT_RADIUS + self.gap - 0.5:  # a concave corner: the disc won't fit
                continue
            # the last leg runs in along the normal from a staging point outside the keep-out zone
            staging = p + n * (AGENT_RADIUS + MARGIN + 3)
            if body.distance(Point(*staging)) < AGENT_RADIUS + MARGIN + 1:
                continue
            approach = np.linalg.norm(start - agent_pos) / 40.0 + 3.0  # rough steps to get there
            for angle in self.directions:
                ca, sa = math.cos(angle), math.sin(angle)
                d = -np.array([n[0] * ca - n[1] * sa, n[0] * sa + n[1] * ca])
                targets = start + np.outer(np.arange(1, n_targets + 1), d * speed)
                poses = self.sim.rollout(block_pose, start, (0.0, 0.0), targets, stop_above=10.0)
                costs = np.array([pose_cost(q) for q in poses])
                scores = costs + weight * (np.arange(1, len(costs) + 1) + approach)
                k = int(np.argmin(scores))
                options.append({"score": scores[k], "cost": costs[k], "start": start, "staging": staging,
                                "targets": targets})
        options.sort(key=lambda o: o["score"])
        if not options or options[0]["cost"] >= cost0 - 0.05:
            # no push helps (rare): try any push, in random order, to get out of the local minimum
            return [options[i] for i in self.rng.permutation(len(options))]
        # near-best pushes, in random order, then the rest as fallbacks if no path reaches the chosen one
        tolerance = 0.15 * (cost0 - options[0]["cost"])
        n_near = sum(o["score"] <= options[0]["score"] + tolerance for o in options[: self.top_k])
        return [options[i] for i in self.rng.permutation(n_near)] + options[n_near:]

    def _commit_push(self, env: PushTEnv) -> None:
        """At the push start, re-simulate from the agent's true position and velocity to pick the push length."""
        block_pose = env.block_pose()
        cost0 = pose_cost(block_pose)
        targets = self.push["targets"]
        poses = self.sim.rollout(block_pose, env.agent.position, env.agent.velocity, targets)
        costs = np.array([pose_cost(q) for q in poses])
        scores = costs + self.time_weight * cost0 * np.arange(1, len(costs) + 1)
        k = int(np.argmin(scores))
        self.queue = list(targets[: k + 1]) if costs[k] < cost0 - 0.05 else []
        self.push = None

    def act(self, env: PushTEnv) -> np.ndarray:
        """The next absolute agent target (2,) in pixels for the env's current state."""
        agent = np.array(env.agent.position)
        if self.queue:
            return np.clip(self.queue.pop(0), 0.0, 512.0)
        if self.push is None or self.approach_steps > 40:
            self.push, self.approach_steps = None, 0
            obstacle = Obstacle(env.block_pose())
            for option in self._plan(env.block_pose(), agent):
                path = obstacle.path(agent, option["staging"])
                if path is not None:
                    self.push, self.waypoints = option, [*path, option["start"]]
                    break
            if self.push is None:  # nothing reachable: step aside at random and try again
                return np.clip(agent + self.rng.normal(0.0, 20.0, 2), 0.0, 512.0)
        while len(self.waypoints) > 1 and np.linalg.norm(self.waypoints[0] - agent) < self.waypoint_tol:
            self.waypoints.pop(0)
        if len(self.waypoints) == 1 and np.linalg.norm(self.waypoints[0] - agent) < self.start_tol:
            self._commit_push(env)
            self.waypoints = []
            # an empty push (the re-simulation found it useless) holds still for a step, then replans
            return np.clip(self.queue.pop(0) if self.queue else agent, 0.0, 512.0)
        self.approach_steps += 1
        target = self.waypoints[0]
        if self.lead is not None and np.linalg.norm(target - agent) > self.lead:
            # a target at most `lead` px ahead of the agent, like a hand moving the cursor, not a jump across the scene
            target = agent + (target - agent) * (self.lead / np.linalg.norm(target - agent))
        return np.clip(target, 0.0, 512.0)


def run_episode(env: PushTEnv, expert: PushTExpert, seed: int, record_images: bool) -> tuple[bool, dict]:
    """One expert episode from ``env.reset(seed=seed)``; returns (success, per-step arrays in DP's pusht layout)."""
    obs, info = env.reset(seed=seed)
    expert.reset()
    steps = {"img": [], "state": [], "keypoint": [], "action": [], "n_contacts": []}
    n_contacts = 0  # DP stores the contacts of the step that led to this observation
    while True:
        action = expert.act(env).astype(np.float32)  # executed as stored, so a replay of the data is exact
        if record_images:
            steps["img"].append(obs["image"])
        steps["state"].append(env.get_state())
        steps["keypoint"].append(env.keypoints())
        steps["action"].append(action)
        steps["n_contacts"].append([n_contacts])
        obs, _, terminated, truncated, info = env.step(action.astype(np.float64))
        n_contacts = info["n_contacts"]
        if terminated or truncated:
            break
    dtypes = {"img": np.uint8}
    arrays = {k: np.asarray(v, dtype=dtypes.get(k, np.float32)) for k, v in steps.items() if v}
    return bool(info["is_success"]), arrays


def generate(out_path, n: int, seed: int = 0, render_images: bool = True, max_steps: int = 300,
             max_attempts: int | None = None, **expert_kwargs) -> dict:
    """Write ``n`` successful expert episodes to a Diffusion Policy pusht zarr store at ``out_path``.

    Keys: img uint8 (T, 96, 96, 3) (only with ``render_images``), state float32 (T, 5) [agent_x, agent_y, block_x,
    block_y, angle], keypoint float32 (T, 9, 2), action float32 (T, 2), n_contacts float32 (T, 1). Episodes start
    from seeds ``seed, seed + 1, ...`` (the test seeds skipped, envs/experts/collect.py); failed episodes are dropped.
    ``expert_kwargs`` go to ``PushTExpert`` (top_k, contact_fraction, directions_deg, gap, time_weight).
    """
    env = PushTEnv(obs_type="visual" if render_images else "state", max_steps=max_steps)

    def attempt(episode_seed: int) -> dict:
        expert = PushTExpert(np.random.default_rng(episode_seed), **expert_kwargs)
        success, arrays = run_episode(env, expert, episode_seed, render_images)
        return {**arrays, "success": success, "length": len(arrays["action"])}

    episodes, stats = collect_demos(attempt, n, seed, task="pusht", max_attempts=max_attempts)
    write_zarr(out_path, episodes, ["img"] * render_images + ["state", "keypoint", "action", "n_contacts"])
    return stats


def evaluate(n: int, seed: int = 0, **expert_kwargs) -> dict:
    """Expert success rate, mean length of successful episodes and seconds per episode over seeds seed..seed+n-1."""
    env = PushTEnv()
    results, start = [], time.perf_counter()
    for s in tqdm(range(seed, seed + n), desc="pusht expert", unit="ep"):
        success, episode = run_episode(env, PushTExpert(np.random.default_rng(s), **expert_kwargs), s, False)
        results.append((success, len(episode["action"])))
    ok = np.array([r[0] for r in results])
    lengths = np.array([r[1] for r in results])
    return {"success_rate": float(ok.mean()), "mean_length": float(lengths[ok].mean()) if ok.any() else None,
            "seconds_per_episode": (time.perf_counter() - start) / n, "failed_seeds": [int(seed + i) for i in np.flatnonzero(~ok)]}


if __name__ == "__main__":  # python -m envs.experts.pusht [n] [seed]: the expert's success rate, no data written
    import sys

    print(evaluate(*(int(a) for a in sys.argv[1:3])))
