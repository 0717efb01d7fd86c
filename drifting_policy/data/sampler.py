"""Fixed-length windows over episodes, padded at the edges by repeating the first / last frame (DP's sampler).

With ``pad_before = To - 1`` the first windows start before the episode (the first observation repeated, as the
environment wrapper does at reset); with ``pad_after = Ta - 1`` the last windows run past its end (the final action
repeated), so every executed step of every demonstration is a training target.
"""

from __future__ import annotations

import numpy as np


def episode_masks(n_episodes: int, val_ratio: float, max_train_episodes: int | None, seed: int = 42):
    """Train and validation episode masks (DP's split: ``round(n * val_ratio)`` episodes, at least one, held out)."""
    val = np.zeros(n_episodes, dtype=bool)
    if val_ratio > 0 and n_episodes > 1:
        n_val = min(max(1, round(n_episodes * val_ratio)), n_episodes - 1)
        val[np.random.default_rng(seed).choice(n_episodes, size=n_val, replace=False)] = True
    train = ~val
    if max_train_episodes is not None and train.sum() > max_train_episodes:
        keep = np.random.default_rng(seed).choice(np.flatnonzero(train), size=max_train_episodes, replace=False)
        train[:] = False
        train[keep] = True
    return train, val


class SequenceSampler:
    def __init__(self, episode_ends: np.ndarray, sequence_length: int, pad_before: int, pad_after: int,
                 episode_mask: np.ndarray | None = None):
        episode_ends = np.asarray(episode_ends)
        mask = np.ones(len(episode_ends), dtype=bool) if episode_mask is None else np.asarray(episode_mask)
        rows = []
        for i in np.flatnonzero(mask):
            start = int(episode_ends[i - 1]) if i > 0 else 0
            length = int(episode_ends[i]) - start
            for offset in range(-pad_before, length - sequence_length + pad_after + 1):
                lo, hi = max(offset, 0), min(offset + sequence_length, length)
                rows.append((start + lo, start + hi, lo - offset, lo - offset + hi - lo))
        # (buffer_start, buffer_end, sample_start, sample_end): where the window's real frames sit in it
        self.indices = np.asarray(rows, dtype=np.int64).reshape(-1, 4)
        self.sequence_length = sequence_length

    def __len__(self) -> int:
        return len(self.indices)

    def window_bounds(self, i: int) -> tuple[int, int, int, int]:
        return tuple(int(v) for v in self.indices[i])

    def sample(self, array: np.ndarray, i: int, length: int | None = None) -> np.ndarray:
        """Window ``i`` of ``array`` (T_total, ...), edge-padded; ``length`` keeps only its first frames."""
        b0, b1, s0, s1 = self.window_bounds(i)
        length = length or self.sequence_length
        frames = array[b0:b1]
        idx = np.clip(np.arange(length) - s0, 0, s1 - s0 - 1)
        return frames[idx]
