"""Per-key affine normalisation, stored in the policy's state dict (Diffusion Policy's "limits" normaliser).

low_dim keys and the action: each dimension's [min, max] over the training data maps to [-1, 1]; a dimension
whose range is below 1e-4 is only shifted (to -1). Selected action dimensions can be left untouched
(robomimic's rotation-6D and gripper). rgb keys: [0, 1] -> [-1, 1].
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

RANGE_EPS = 1e-4


class Normalizer(nn.Module):
    def __init__(self, shape_meta: dict):
        super().__init__()
        self.keys = {k: m.get("type", "low_dim") for k, m in shape_meta["obs"].items()} | {"action": "low_dim"}
        shapes = {k: m["shape"] for k, m in shape_meta["obs"].items()} | {"action": shape_meta["action"]["shape"]}
        for key, kind in self.keys.items():
            if kind != "rgb" and len(shapes[key]) != 1:
                raise ValueError(f"shape_meta: low_dim key '{key}' must be a flat vector, got shape {shapes[key]}")
            dim = 1 if kind == "rgb" else int(shapes[key][0])
            self.register_buffer(f"{key}__scale", torch.ones(dim))
            self.register_buffer(f"{key}__offset", torch.zeros(dim))
            # 1 once fitted; in the state dict, so a checkpoint without statistics is caught on load
            self.register_buffer(f"{key}__fitted", torch.tensor(float(kind == "rgb")))
            if kind == "rgb":
                self._set(key, torch.tensor([2.0]), torch.tensor([-1.0]))

    def _set(self, key: str, scale: torch.Tensor, offset: torch.Tensor) -> None:
        getattr(self, f"{key}__scale").copy_(scale)
        getattr(self, f"{key}__offset").copy_(offset)
        getattr(self, f"{key}__fitted").fill_(1.0)

    def fit(self, data: dict[str, np.ndarray], identity_dims: dict[str, list[int]] | None = None) -> None:
        """``data[key]`` (N, ...) for every low_dim key and "action"; ``identity_dims[key]`` dims left as they are."""
        for key, kind in self.keys.items():
            if kind == "rgb":
                continue
            if key not in data:
                raise KeyError(f"cannot fit the normaliser: no data for '{key}' (have {sorted(data)})")
            x = torch.as_tensor(np.asarray(data[key]), dtype=torch.float32).reshape(len(data[key]), -1)
            lo, hi = x.min(0).values, x.max(0).values
            span = hi - lo
            scale = torch.where(span < RANGE_EPS, torch.ones_like(span), 2.0 / span.clamp_min(RANGE_EPS))
            offset = -1.0 - lo * scale
            for d in (identity_dims or {}).get(key, []):
                scale[d], offset[d] = 1.0, 0.0
            self._set(key, scale, offset)

    def _params(self, key: str) -> tuple[torch.Tensor, torch.Tensor]:
        if key not in self.keys:
            raise KeyError(f"normaliser has no key '{key}'; keys: {sorted(self.keys)}")
        if not getattr(self, f"{key}__fitted"):
            raise RuntimeError(f"normaliser statistics for '{key}' are missing: fit it on data or load a checkpoint")
        return getattr(self, f"{key}__scale"), getattr(self, f"{key}__offset")

    def _affine(self, key: str, x: torch.Tensor, inverse: bool) -> torch.Tensor:
        """rgb: any shape; low_dim and action: (..., D)."""
        scale, offset = self._params(key)
        if self.keys[key] == "rgb":
            scale, offset = scale.view(1), offset.view(1)
        return (x - offset) / scale if inverse else x * scale + offset

    def normalize(self, key: str, x: torch.Tensor) -> torch.Tensor:
        return self._affine(key, x, inverse=False)

    def unnormalize(self, key: str, x: torch.Tensor) -> torch.Tensor:
        return self._affine(key, x, inverse=True)

    def normalize_obs(self, obs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        missing = [k for k, kind in self.keys.items() if k != "action" and k not in obs]
        if missing:
            raise KeyError(f"observation is missing key(s) {missing} required by shape_meta; got {sorted(obs)}")
        return {k: self.normalize(k, obs[k]) for k in self.keys if k != "action"}
