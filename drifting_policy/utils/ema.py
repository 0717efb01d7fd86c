"""The one exponential moving average of the package: an averaged copy of a module, updated by diffusers'
``EMAModel``. Three decay schedules cover every trainer:

- ``power`` (Diffusion Policy): ``1 - (1 + step) ** -power``, capped at ``max_decay``;
- ``rampup``: ``(1 + step) / (10 + step)``, capped at ``max_decay`` (the image generator);
- ``constant``: ``max_decay`` from the second update on (the toys, the image encoder).
In every schedule the first update copies the weights. Only parameters are averaged; buffers (normaliser
statistics, schedules) are copied from the trained module at each ``sync``.
"""

from __future__ import annotations

import copy

import torch
from diffusers.training_utils import EMAModel

SCHEDULES = ("power", "rampup", "constant")


class EMA:
    def __init__(self, module: torch.nn.Module, max_decay: float = 0.9999, schedule: str = "power",
                 power: float = 0.75):
        if schedule not in SCHEDULES:
            raise ValueError(f"EMA schedule must be one of {SCHEDULES}; got {schedule!r}")
        if not 0.0 <= max_decay < 1.0:
            raise ValueError(f"EMA max_decay must be in [0, 1); got {max_decay}")
        self.module = copy.deepcopy(module).requires_grad_(False)
        self._kwargs = {"decay": max_decay, "use_ema_warmup": schedule == "power", "power": power, "inv_gamma": 1.0,
                        "min_decay": max_decay if schedule == "constant" else 0.0}
        self._ema = EMAModel(self.module.parameters(), **self._kwargs)

    @property
    def steps(self) -> int:
        return self._ema.optimization_step

    @torch.no_grad()
    def update(self, module: torch.nn.Module) -> None:
        """One update toward ``module``'s current parameters (cheap: the copy is refreshed by ``sync``)."""
        self._ema.step(module.parameters())

    @torch.no_grad()
    def sync(self, module: torch.nn.Module | None = None) -> torch.nn.Module:
        """Write the averages into ``self.module`` (and copy ``module``'s buffers); returns ``self.module``."""
        self._ema.copy_to(self.module.parameters())
        if module is not None:
            for mine, theirs in zip(self.module.buffers(), module.buffers()):
                mine.copy_(theirs)
        return self.module

    def restore(self, state: dict[str, torch.Tensor], steps: int) -> None:
        """Resume from a saved averaged state dict (as ``self.module.state_dict()``) after ``steps`` updates."""
        self.module.load_state_dict(state)
        self._ema = EMAModel(self.module.parameters(), **self._kwargs)
        self._ema.optimization_step = steps
