"""The one-step drifting policy: one network call maps noise to an action chunk.

Training treats each observation like an image class (REFERENCE.md 1.3): its conditioning is repeated G times,
G noise chunks give G generated chunks (the group, also each other's self-masked negatives), and the positives are
its demonstrated chunk (``positives="self"``) or the demonstrated chunks of the k observations nearest to it in
the batch (``positives="knn"``, which keeps modes that per-observation positives can average away). Kernels never
pool the batch across observations.
"""

from __future__ import annotations

import torch
from einops import rearrange

from drifting_policy.field import drifting_loss
from drifting_policy.policies.base import Policy


def knn_positive_indices(features: torch.Tensor, k: int) -> torch.Tensor:
    """(B, D) -> (B, k) indices of each row's k nearest rows in the batch (Euclidean), itself first.

    Ties are broken by index so the result is deterministic. Raises if k is not in [1, B].
    """
    if features.ndim != 2:
        raise ValueError(f"features must be (B, D); got {tuple(features.shape)}")
    if not 1 <= k <= features.shape[0]:
        raise ValueError(f"k must be in [1, B={features.shape[0]}]; got {k}")
    dist = torch.cdist(features.detach().float(), features.detach().float())
    dist.fill_diagonal_(-1.0)  # self first, even when another row has the same features
    return torch.sort(dist, dim=1, stable=True).indices[:, :k]


class DriftingPolicy(Policy):
    def __init__(self, *args, n_samples: int = 8, grouping: str = "chunk", positives: str = "self",
                 knn_k: int = 8, knn_space: str = "obs", temperatures=(0.02, 0.05, 0.2), **kwargs):
        super().__init__(*args, **kwargs)
        if grouping not in ("chunk", "timestep"):
            raise ValueError(f"policy.grouping must be 'chunk' or 'timestep'; got '{grouping}'")
        if positives not in ("self", "knn") or knn_space not in ("obs", "features"):
            raise ValueError(f"policy.positives must be 'self'|'knn', knn_space 'obs'|'features'; got {positives}, {knn_space}")
        self.n_samples, self.grouping, self.positives = n_samples, grouping, positives
        self.knn_k, self.knn_space, self.temperatures = knn_k, knn_space, tuple(temperatures)

    def _positives(self, batch: dict, cond: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """(B, Tp, Da) demos -> (B, P, Tp, Da) positives of each observation."""
        if self.positives == "self":
            return target[:, None]
        if self.knn_space == "features":
            feats = cond.detach()
        else:
            nobs = self.normalizer.normalize_obs({k: v[:, : self.n_obs_steps] for k, v in batch["obs"].items()})
            feats = torch.cat([nobs[k].flatten(1) for k in self.obs_encoder.low_dim_keys], dim=-1)
        return target[knn_positive_indices(feats, min(self.knn_k, len(feats)))]  # a short last batch

    def compute_loss(self, batch: dict) -> tuple[torch.Tensor, dict]:
        cond = self.encode_obs(batch["obs"])  # (B, C)
        target = self.normalized_action(batch)  # (B, Tp, Da)
        B, G = target.shape[0], self.n_samples
        noise = torch.randn(B * G, *target.shape[1:], device=target.device)
        gen = rearrange(self.model(noise, cond.repeat_interleave(G, 0)), "(b g) t d -> b g t d", g=G)
        pos = self._positives(batch, cond, target)
        if self.grouping == "chunk":
            loss, info = drifting_loss(gen.flatten(2), pos.flatten(2), temperatures=self.temperatures)
        else:  # every timestep is its own group of Da-dimensional samples
            loss, info = drifting_loss(rearrange(gen, "b g t d -> (b t) g d"), rearrange(pos, "b p t d -> (b t) p d"),
                                       temperatures=self.temperatures)
        logs = {f"drift/{k}": v.item() for k, v in info.items()}
        logs["mse_to_demo"] = (gen.detach() - target[:, None]).square().mean().item()
        return loss.mean(), logs

    def generate(self, cond: torch.Tensor) -> torch.Tensor:
        noise = torch.randn(cond.shape[0], self.horizon, self.action_dim, device=cond.device)
        return self.model(noise, cond)
