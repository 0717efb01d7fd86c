"""Sample queues for image drifting and the training-time CFG weights (docs/notes/field.md section 2).

Positives for class c come from a per-class queue of the most recent real samples of c; unconditional negatives
come from one global queue of recent real samples of any class. Both are ring buffers fed by the data stream and
sampled without replacement, vectorised over classes.
"""

from __future__ import annotations

import torch

QUEUE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "uint8": torch.uint8}


def _draw_without_replacement(filled: torch.Tensor, capacity: int, n: int, generator) -> torch.Tensor:
    """(R,) filled counts -> (R, n) distinct indices in [0, filled[r]) per row, via top-n of random keys."""
    if int(filled.min()) < n:
        raise ValueError(f"queue holds {int(filled.min())} samples in some row but {n} were requested; fill it first")
    keys = torch.rand(filled.shape[0], capacity, generator=generator)
    keys[torch.arange(capacity).unsqueeze(0) >= filled.unsqueeze(1)] = -1.0  # empty slots never win
    return keys.topk(n, dim=1).indices


class ClassQueue:
    """Per-class ring buffers: ``buffer`` (num_classes, size, *shape).

    ``dtype=torch.uint8`` stores samples in [-1, 1] as 8-bit pixels (exact for decoded images): ImageNet pixels
    at 1000 x 128 x 3 x 256 x 256 take 25 GB that way instead of 100 GB in float32.
    """

    def __init__(self, num_classes: int, size: int, sample_shape: tuple[int, ...], dtype=torch.float32):
        self.num_classes, self.size = num_classes, size
        self.buffer = torch.zeros(num_classes, size, *sample_shape, dtype=dtype)
        self.ptr = torch.zeros(num_classes, dtype=torch.long)
        self.count = torch.zeros(num_classes, dtype=torch.long)

    def _store(self, x: torch.Tensor) -> torch.Tensor:
        x = x.detach().cpu()
        if self.buffer.dtype == torch.uint8:
            return ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        return x.to(self.buffer.dtype)

    def _load(self, x: torch.Tensor) -> torch.Tensor:
        return x.float() / 127.5 - 1.0 if x.dtype == torch.uint8 else x.float()

    def push(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Append samples x (n, *shape) with labels y (n,), overwriting the oldest of their class."""
        y = y.long().cpu()
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= self.num_classes):
            raise ValueError(f"labels must lie in [0, {self.num_classes}); got [{int(y.min())}, {int(y.max())}]")
        # Rank of each sample among the earlier samples of its class in this batch, so one scatter writes all.
        order = torch.argsort(y, stable=True)
        ys = y[order]
        first = torch.searchsorted(ys, ys, right=False)
        rank_in_class = torch.empty_like(y)
        rank_in_class[order] = torch.arange(len(y)) - first
        slot = (self.ptr[y] + rank_in_class) % self.size
        keep = rank_in_class >= (torch.bincount(y, minlength=self.num_classes)[y] - self.size)  # last `size` only
        self.buffer[y[keep], slot[keep]] = self._store(x)[keep]
        added = torch.bincount(y, minlength=self.num_classes)
        self.ptr = (self.ptr + added) % self.size
        self.count = (self.count + added).clamp_max(self.size)

    def sample(self, classes: torch.Tensor, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """(K,) class ids -> (K, n, *shape) distinct samples of each class."""
        classes = classes.long().cpu()
        idx = _draw_without_replacement(self.count[classes], self.size, n, generator)
        return self._load(self.buffer[classes.unsqueeze(1), idx])

    def is_full(self, n: int | None = None) -> bool:
        return bool((self.count >= (self.size if n is None else n)).all())

    def state_dict(self, prefix: str) -> dict[str, torch.Tensor]:
        return {f"{prefix}buffer": self.buffer, f"{prefix}ptr": self.ptr, f"{prefix}count": self.count}

    def load_state_dict(self, state: dict[str, torch.Tensor], prefix: str) -> None:
        for k in ("buffer", "ptr", "count"):
            if f"{prefix}{k}" not in state:
                raise KeyError(f"queue state lacks {prefix}{k}")
            cur = getattr(self, k)
            if state[f"{prefix}{k}"].shape != cur.shape:
                raise ValueError(f"queue state {prefix}{k} has shape {tuple(state[prefix + k].shape)}, "
                                 f"expected {tuple(cur.shape)}")
            setattr(self, k, state[f"{prefix}{k}"].clone())


class GlobalQueue(ClassQueue):
    """One ring buffer of recent real samples of any class (labels ignored): the unconditional negatives."""

    def __init__(self, size: int, sample_shape: tuple[int, ...], dtype=torch.float32):
        super().__init__(1, size, sample_shape, dtype)

    def push(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        super().push(x, torch.zeros(len(x), dtype=torch.long))

    def sample_groups(self, k: int, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """(k, n, *shape): n distinct samples for each of k groups (independent across groups)."""
        idx = _draw_without_replacement(self.count.expand(k), self.size, n, generator)
        return self._load(self.buffer[0][idx])


def sample_cfg_alpha(n: int, power: float, lo: float = 1.0, hi: float = 4.0, generator=None) -> torch.Tensor:
    """n CFG scales on [lo, hi] with density proportional to alpha^-power (inverse-CDF sampling)."""
    u = torch.rand(n, generator=generator, dtype=torch.float64)
    if abs(power - 1.0) < 1e-12:
        return (lo * (hi / lo) ** u).float()
    e = 1.0 - power
    return ((lo**e + u * (hi**e - lo**e)) ** (1.0 / e)).float()


def cfg_negative_weight(alpha: torch.Tensor, n_gen: int, n_unc: int) -> torch.Tensor:
    """Weight of each unconditional negative for a group with CFG scale alpha: (alpha - 1)(N_gen - 1) / N_unc.

    With it the generated samples, which repel each other with total weight N_gen - 1, feel the unconditional
    data with alpha - 1 times that weight, so the field targets p_data(x|c)^alpha / p_data(x)^(alpha-1) in spirit.
    """
    if n_unc <= 0:
        raise ValueError(f"n_unc must be positive for CFG weights; got {n_unc}")
    return (alpha - 1.0) * (n_gen - 1) / n_unc
