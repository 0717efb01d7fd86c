"""Pose servoing for the robosuite scripted experts: 7-D delta actions that drive the grip site to a target pose.

The delta OSC controller moves its goal to (current grip-site pose + 0.05 m * dpos, exp(0.5 rad * drot) * current
orientation), world axes (the base frame has identity rotation in these tasks). A proportional law on the pose error
saturated at a per-episode speed therefore reaches a waypoint without overshoot, and being closed-loop it recovers
from perturbations by itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation

from envs.geometry import rot_z
from envs.robomimic import grip_site_pose

# Grip-site orientation pointing straight down with the fingers closing along world y (the Panda's home pose).
# The fingers close along the site's x axis, so top_down(yaw) closes them along the direction yaw + 90 deg.
R_DOWN = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]])


def top_down(yaw: float) -> np.ndarray:
    return rot_z(yaw) @ R_DOWN


def gripper_yaw(rot: np.ndarray) -> float:
    """The yaw that top_down() would need to give the site's current heading (its x axis projected on xy)."""
    return float(np.arctan2(rot[1, 0], rot[0, 0]) - np.pi / 2)


def wrap(angle: float, period: float = 2 * np.pi) -> float:
    """Wrap to [-period/2, period/2)."""
    return float((angle + period / 2) % period - period / 2)


def rotation_error(target: np.ndarray, current: np.ndarray) -> np.ndarray:
    """World-frame axis-angle taking ``current`` to ``target``."""
    return Rotation.from_matrix(target @ current.T).as_rotvec()


def servo(env, target_pos, target_rot, gripper: float, speed: float = 1.0, rot_speed: float = 1.0):
    """One delta action toward the target pose; returns (action, position error norm, rotation error norm)."""
    pos, rot = grip_site_pose(env.rs_env)
    dp = np.asarray(target_pos) - pos
    dr = rotation_error(target_rot, rot)
    a_pos = dp / 0.05
    n = np.linalg.norm(a_pos)
    if n > speed:  # saturate the norm, not each axis: the path stays a straight line
        a_pos *= speed / n
    a_rot = dr / 0.5
    n = np.linalg.norm(a_rot)
    if n > rot_speed:
        a_rot *= rot_speed / n
    return np.concatenate([a_pos, a_rot, [gripper]]), float(np.linalg.norm(dp)), float(np.linalg.norm(dr))


@dataclass
class Perturbation:
    """A segment of noisy actions the expert must recover from (DP's "perturbed segments with recovery")."""

    start: int
    length: int
    sigma: float
    drift: np.ndarray  # a constant push added on top of the noise

    @classmethod
    def sample(cls, rng: np.random.Generator, earliest: int, latest: int) -> Perturbation:
        drift = rng.normal(size=6) * np.array([1, 1, 0.5, 0.3, 0.3, 0.3])
        drift *= rng.uniform(0.2, 0.6) / max(np.linalg.norm(drift[:3]), 1e-6)
        return cls(int(rng.integers(earliest, latest)), int(rng.integers(4, 12)), float(rng.uniform(0.1, 0.4)), drift)

    def apply(self, t: int, action: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if not self.start <= t < self.start + self.length:
            return action
        out = action.copy()
        out[:6] += self.drift + rng.normal(0.0, self.sigma, 6)
        out[:6] = np.clip(out[:6], -1.0, 1.0)
        return out
