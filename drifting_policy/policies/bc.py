"""Deterministic behaviour cloning with the same encoder and backbone: one call, MSE to the demonstrated chunk.
It averages modes by construction, which is what the multimodal tasks expose."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from drifting_policy.policies.base import Policy


class BCPolicy(Policy):
    name = "bc"
    def compute_loss(self, batch: dict) -> tuple[torch.Tensor, dict]:
        target = self.normalized_action(batch)
        loss = F.mse_loss(self.generate(self.encode_obs(batch["obs"])), target)
        return loss, {"mse_to_demo": loss.item()}

    def generate(self, cond: torch.Tensor) -> torch.Tensor:
        return self.model(torch.zeros(cond.shape[0], self.horizon, self.action_dim, device=cond.device), cond)
