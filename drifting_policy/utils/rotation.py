"""Rotation conversions for robomimic absolute actions (numpy, batched over leading axes).

Diffusion Policy stores absolute orientations as "rotation 6D" (Zhou et al. 2019) in pytorch3d's convention: the
first two ROWS of the rotation matrix, flattened. Decoding normalises and Gram-Schmidt-orthogonalises them, so any
6-vector a network outputs maps to a valid rotation.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation


def matrix_to_rot6d(mat: np.ndarray) -> np.ndarray:
    """(..., 3, 3) rotation matrices -> (..., 6): rows 0 and 1."""
    mat = np.asarray(mat)
    return mat[..., :2, :].reshape(*mat.shape[:-2], 6)


def rot6d_to_matrix(d6: np.ndarray) -> np.ndarray:
    """(..., 6) -> (..., 3, 3); the rows are the Gram-Schmidt orthonormalisation of the two 3-vectors."""
    d6 = np.asarray(d6, dtype=np.float64)
    a1, a2 = d6[..., :3], d6[..., 3:]
    b1 = a1 / np.maximum(np.linalg.norm(a1, axis=-1, keepdims=True), 1e-12)
    a2 = a2 - np.sum(b1 * a2, axis=-1, keepdims=True) * b1
    b2 = a2 / np.maximum(np.linalg.norm(a2, axis=-1, keepdims=True), 1e-12)
    b3 = np.cross(b1, b2)
    return np.stack([b1, b2, b3], axis=-2)


def axis_angle_to_matrix(rotvec: np.ndarray) -> np.ndarray:
    rotvec = np.asarray(rotvec, dtype=np.float64)
    return Rotation.from_rotvec(rotvec.reshape(-1, 3)).as_matrix().reshape(*rotvec.shape[:-1], 3, 3)


def matrix_to_axis_angle(mat: np.ndarray) -> np.ndarray:
    mat = np.asarray(mat, dtype=np.float64)
    return Rotation.from_matrix(mat.reshape(-1, 3, 3)).as_rotvec().reshape(*mat.shape[:-2], 3)


def axis_angle_to_rot6d(rotvec: np.ndarray) -> np.ndarray:
    return matrix_to_rot6d(axis_angle_to_matrix(rotvec))


def rot6d_to_axis_angle(d6: np.ndarray) -> np.ndarray:
    return matrix_to_axis_angle(rot6d_to_matrix(d6))
