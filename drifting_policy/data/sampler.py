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
        rows, episodes = [], []
        for i in np.flatnonzero(mask):
            start = int(episode_ends[i - 1]) if i > 0 else 0
            length = int(episode_ends[i]) - start
            for offset in range(-pad_before, length - sequence_length + pad_after + 1):
                lo, hi = max(offset, 0), min(offset + sequence_length, length)
                rows.append((start + lo, start + hi, lo - offset, lo - offset + hi - lo))
                episodes.append(i)
        # (buffer_start, buffer_end, sample_start, sample_end): where the window's real frames sit in it
        self.indices = np.asarray(rows, dtype=np.int64).reshape(-1, 4)
        self.episode_of = np.asarray(episodes, dtype=np.int64)  # the episode each window comes from
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


def nearest_other_episode(features: np.ndarray, episode_of: np.ndarray, m: int, chunk: int = 1024) -> np.ndarray:
    """(N, D) window features -> (N, m) indices of each window's m nearest windows from OTHER episodes (Euclidean).

    Windows of the same episode are excluded: its neighbouring windows repeat its own action chunk shifted by a
    step, while other demonstrations in a similar state show what else was done there (the conditional spread).
    """
    features = np.asarray(features, dtype=np.float32)
    if features.ndim != 2 or len(features) != len(episode_of):
        raise ValueError(f"features must be (N, D) with N = {len(episode_of)} windows; got {features.shape}")
    n_other = len(features) - np.bincount(episode_of).max()
    if not 1 <= m <= n_other:
        raise ValueError(f"m must be in [1, {n_other}] (windows outside the largest episode); got {m}")
    sq = (features**2).sum(1)
    out = np.empty((len(features), m), dtype=np.int64)
    for a in range(0, len(features), chunk):
        d = sq[a : a + chunk, None] + sq[None] - 2 * features[a : a + chunk] @ features.T
        d[episode_of[a : a + chunk, None] == episode_of[None]] = np.inf
        part = np.argpartition(d, m - 1, axis=1)[:, :m]
        order = np.take_along_axis(d, part, 1).argsort(1, kind="stable")
        out[a : a + chunk] = np.take_along_axis(part, order, 1)
    return out


class NeighbourBatchSampler:
    """Batches of ``batch_size / group`` random anchor windows, each followed by its ``group - 1`` nearest windows
    from other episodes, so that k-nearest-neighbour positives (k <= group) find real neighbours in every batch.

    One epoch has as many batches as plain shuffling would (``ceil(N / batch_size)``); anchors are a fresh
    permutation each epoch, seeded by (seed, epoch) so a resumed run sees the same batches. ``rank``/``world``
    give each process a contiguous slice of whole groups.
    """

    def __init__(self, neighbours: np.ndarray, batch_size: int, group: int, seed: int, epoch: int,
                 rank: int = 0, world: int = 1):
        if group < 2 or neighbours.shape[1] < group - 1:
            raise ValueError(f"group must be in [2, {neighbours.shape[1] + 1}]; got {group}")
        if batch_size % (group * world):
            raise ValueError(f"training.batch_size {batch_size} must divide into groups of {group} on {world} process(es)")
        self.neighbours, self.batch_size, self.group = neighbours, batch_size, group
        self.rank, self.world = rank, world
        self.rng = np.random.default_rng([seed, epoch])

    def __len__(self) -> int:
        return -(-len(self.neighbours) // self.batch_size)

    def __iter__(self):
        n_anchor = self.batch_size // self.group
        anchors = np.resize(self.rng.permutation(len(self.neighbours)), len(self) * n_anchor)  # whole batches
        per_rank = self.batch_size // self.world
        for b in range(len(self)):
            a = anchors[b * n_anchor : (b + 1) * n_anchor]
            batch = np.concatenate([a[:, None], self.neighbours[a, : self.group - 1]], axis=1).reshape(-1)
            yield batch[self.rank * per_rank : (self.rank + 1) * per_rank].tolist()
