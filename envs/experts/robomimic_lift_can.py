"""Scripted experts for Lift and PickPlaceCan: generators that yield (7-D delta action, perturbable) each step,
re-reading the scene every time. ``perturbable`` marks free-space motion, where the runner may inject a perturbed
segment; near-contact phases (final descent, closing, release) are never perturbed, so a push cannot tip the can.

Variety comes from per-episode draws (hover height, approach offset, speed, grasp yaw among the symmetric choices,
carry height, drop point); recovery comes from closed-loop servoing and from re-grasping when the object is lost.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from envs.experts.robomimic_servo import gripper_yaw, servo, top_down, wrap
from envs.robomimic import grip_site_pose

Target = Callable[[], np.ndarray]


def body_pose(rs_env, body_id: int) -> tuple[np.ndarray, np.ndarray]:
    data = rs_env.sim.data
    return np.array(data.body_xpos[body_id]), np.array(data.body_xmat[body_id]).reshape(3, 3)


def goto(env, target: Target, rot: np.ndarray, gripper: float, speed: float, tol: float, tol_rot: float,
         max_steps: int, free: bool = True) -> Iterator[tuple[np.ndarray, bool]]:
    """Servo toward a (possibly moving) target until within tolerance or out of steps; returns whether reached."""
    for _ in range(max_steps):
        action, err, err_rot = servo(env, target(), rot, gripper, speed)
        if err < tol and err_rot < tol_rot:
            return True
        yield action, free
    return False


def hold(env, target: np.ndarray, rot: np.ndarray, gripper: float, steps: int) -> Iterator[tuple[np.ndarray, bool]]:
    """Servo to a fixed pose for a number of steps (closing or opening the gripper meanwhile)."""
    for _ in range(steps):
        yield servo(env, target, rot, gripper)[0], False


def grasp_yaw(rng: np.random.Generator, current: float, object_yaw: float, symmetry: float) -> float:
    """A top-down grasp yaw aligned with the object's symmetry: mostly the nearest one, sometimes a neighbour."""
    nearest = current + wrap(object_yaw - current, symmetry)
    options = [nearest, nearest + symmetry, nearest - symmetry]
    options = [y for y in options if abs(wrap(y - current)) < 1.9]  # keep the wrist well inside its range
    weights = np.array([0.8 if y == nearest else 0.1 for y in options])
    return float(rng.choice(options, p=weights / weights.sum()) + rng.normal(0.0, 0.03))


def pick(env, rng, body_id: int, yaw: float, speed: float, grasp_dz: float) -> Iterator[tuple[np.ndarray, bool]]:
    """Hover, descend and close on the object; ends with the gripper closed around it."""
    rs = env.rs_env
    rot = top_down(yaw)
    hover = np.array([*rng.normal(0.0, 0.015, 2), rng.uniform(0.05, 0.13)])
    obj = lambda: body_pose(rs, body_id)[0]  # noqa: E731
    if rng.random() < 0.3:  # a detour waypoint: approach from higher up or from the side
        via = np.array([*rng.normal(0.0, 0.05, 2), rng.uniform(0.12, 0.2)])
        yield from goto(env, lambda: obj() + via, rot, -1.0, speed, 0.03, 0.4, 60)
    yield from goto(env, lambda: obj() + hover, rot, -1.0, speed, 0.015, 0.12, 80)
    yield from goto(env, lambda: obj() + [0.0, 0.0, grasp_dz], rot, -1.0, 0.4 + 0.3 * speed, 0.007, 0.08, 50, False)
    grip = grip_site_pose(rs)[0]
    yield from hold(env, grip, rot, 1.0, int(rng.integers(5, 10)))


def lift_expert(env, rng: np.random.Generator) -> Iterator[tuple[np.ndarray, bool]]:
    rs = env.rs_env
    speed = rng.uniform(0.5, 1.0)
    while True:  # one pass per grasp attempt; a lost cube starts a new attempt
        cube_pos, cube_rot = body_pose(rs, rs.cube_body_id)
        yaw = grasp_yaw(rng, gripper_yaw(grip_site_pose(rs)[1]), np.arctan2(cube_rot[1, 0], cube_rot[0, 0]), np.pi / 2)
        yield from pick(env, rng, rs.cube_body_id, yaw, speed, rng.uniform(-0.004, 0.008))
        top = grip_site_pose(rs)[0] + [*rng.normal(0.0, 0.02, 2), rng.uniform(0.12, 0.2)]
        for _ in range(120):
            if np.linalg.norm(body_pose(rs, rs.cube_body_id)[0] - grip_site_pose(rs)[0]) > 0.04:
                break  # dropped
            yield servo(env, top, top_down(yaw), 1.0, speed)[0], True
        here = grip_site_pose(rs)[0]
        yield from hold(env, here + [0, 0, 0.03], top_down(yaw), -1.0, 5)


def can_drop_point(rs_env, pull: float = 0.05) -> np.ndarray:
    """The Can's target quadrant centre pulled toward the robot (the far corner is at the Panda's reach limit)."""
    place = np.array(rs_env.target_bin_placements[rs_env.object_to_id["can"]])
    base = np.array(rs_env.robots[0].base_pos)
    toward = (base - place)[:2] / np.linalg.norm((base - place)[:2])
    place[:2] += pull * toward
    return place


def can_expert(env, rng: np.random.Generator) -> Iterator[tuple[np.ndarray, bool]]:
    rs = env.rs_env
    can_id = rs.obj_body_id["Can"]
    speed = rng.uniform(0.55, 1.0)
    drop = can_drop_point(rs, rng.uniform(0.04, 0.06)) + [*rng.normal(0.0, 0.01, 2), 0.0]
    carry_z = rng.uniform(0.98, 1.05)
    held = lambda: np.linalg.norm(body_pose(rs, can_id)[0] - grip_site_pose(rs)[0]) < 0.05  # noqa: E731
    while True:
        yaw = gripper_yaw(grip_site_pose(rs)[1]) + rng.uniform(-0.6, 0.6)  # the can is round: any yaw grasps it
        rot = top_down(yaw)
        yield from pick(env, rng, can_id, yaw, speed, rng.uniform(0.0, 0.015))
        up = grip_site_pose(rs)[0]
        up[2] = carry_z
        lost = False
        stages = [(up, 0.03, 40)]
        if rng.random() < 0.4:  # a via point halfway, slightly off the straight line
            stages.append(((up + drop) / 2 + [*rng.normal(0.0, 0.04, 2), carry_z - (up[2] + drop[2]) / 2], 0.04, 60))
        # release from above the bin (the can falls the last few cm): lower targets are out of the Panda's reach
        stages += [(np.array([drop[0], drop[1], carry_z]), 0.02, 80), (drop + [0, 0, rng.uniform(0.14, 0.18)], 0.02, 30)]
        for i, (target, tol, limit) in enumerate(stages):
            for _ in range(limit):
                if not held():
                    lost = True
                    break
                action, err, _ = servo(env, target, rot, 1.0, speed)
                if err < tol:
                    break
                yield action, i < len(stages) - 1
            if lost:
                break
        if lost:
            here = grip_site_pose(rs)[0]
            yield from hold(env, here + [0, 0, 0.04], rot, -1.0, 6)
            continue
        here = grip_site_pose(rs)[0]
        yield from hold(env, here, rot, -1.0, int(rng.integers(3, 7)))
        away = here + [*rng.normal(0.0, 0.02, 2), rng.uniform(0.1, 0.16)]
        while True:
            yield servo(env, away, rot, -1.0, speed)[0], True
