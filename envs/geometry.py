"""Rigid-transform helpers shared by the envs and the scripted experts (plain numpy, no simulator imports)."""

from __future__ import annotations

import math

import numpy as np


def rot_z(angle: float) -> np.ndarray:
    """The 3x3 rotation by ``angle`` (rad) about the z axis."""
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def planar_transform(points: np.ndarray, pose) -> np.ndarray:
    """Body-frame 2-D points (N, 2) placed at a planar pose (x, y, angle): rotate by angle, then translate."""
    x, y, angle = pose
    c, s = math.cos(angle), math.sin(angle)
    return points @ np.array([[c, s], [-s, c]]) + np.array([x, y])
