"""The one-step drifting policy: one network call maps noise to an action chunk.

Training treats each observation like an image class (docs/notes/field.md, section 3): its conditioning is repeated G times,
G noise chunks give G generated chunks (the group, also each other's self-masked negatives), and the positives are
its demonstrated chunk (``positives="self"``) or the demonstrated chunks of the k observations nearest to it in
the batch, in normalised low-dim observation space (``positives="knn"``, which keeps modes that per-observation
positives can average away). Kernels never pool the batch across observations.

Under torchrun every process computes the field over the groups of all processes (gathered, gradients through its
own), so the batch-global distance scale and force normalisers are those of the global batch: two processes train
exactly like one (tests/test_training.py).
"""

from __future__ import annotations

import torch
from einops import rearrange

from drifting_policy.field import drifting_loss
from drifting_policy.policies.base import Policy
from drifting_policy.utils.distributed import gather_groups, world


def knn_positive_indices(features: torch.Tensor, k: int) -> torch.Tensor:
    """(B, D) -> (B, k) indices of each row's k nearest rows in the batch (Euclidean), itself first.

    Ties are broken by index so the result is deterministic. Raises if k is not in [1, B].
    """
    return knn_with_distances(features, k)[0]


def knn_with_distances(features: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``knn_positive_indices`` plus the (B, k) distances to those rows (0 for itself)."""
    if features.ndim != 2:
        raise ValueError(f"features must be (B, D); got {tuple(features.shape)}")
    if not 1 <= k <= features.shape[0]:
        raise ValueError(f"k must be in [1, B={features.shape[0]}]; got {k}")
    dist = torch.cdist(features.detach().float(), features.detach().float())
    dist.fill_diagonal_(-1.0)  # self first, even when another row has the same features
    sorted_dist, idx = torch.sort(dist, dim=1, stable=True)
    return idx[:, :k], sorted_dist[:, :k].clamp_min(0.0)


def neighbour_weights(dist: torch.Tensor) -> torch.Tensor:
    """Gaussian observation kernel over (B, k) neighbour distances -> (B, k) positive weights in (0, 1].

    Its width is the batch median of the distance to the farthest selected neighbour, so a neighbour at a typical
    k-th distance weighs exp(-1/2) and one from a sparse region far less.
    """
    h = dist[:, -1].median().clamp_min(1e-8)
    return torch.exp(-0.5 * (dist / h).square())


class DriftingPolicy(Policy):
    name = "drifting"

    def __init__(self, *args, n_samples: int = 8, positives: str = "self", knn_k: int = 8, knn_weighting: str = "none",
                 temperatures=(0.02, 0.05, 0.2), noise_skip: float = 0.0, noise_skip_anneal: float = 0.0, **kwargs):
        super().__init__(*args, **kwargs)
        if not isinstance(n_samples, int) or n_samples < 1:
            raise ValueError(f"policy.n_samples (G, generated chunks per observation) must be an integer >= 1; "
                             f"got {n_samples!r}")
        temperatures = tuple(float(t) for t in temperatures)
        if not temperatures or any(not t > 0 for t in temperatures):
            raise ValueError(f"policy.temperatures must be a non-empty list of numbers > 0; got {list(temperatures)}")
        if positives not in ("self", "knn"):
            raise ValueError(f"policy.positives must be 'self' or 'knn'; got '{positives}'")
        if positives == "knn" and not self.obs_encoder.low_dim_keys:
            raise ValueError("policy.positives=knn finds neighbours in low-dim observations; this task has only cameras")
        if positives == "knn" and (not isinstance(knn_k, int) or knn_k < 1):
            raise ValueError(f"policy.knn_k must be an integer >= 1; got {knn_k!r}")
        if knn_weighting not in ("none", "gaussian"):
            raise ValueError(f"policy.knn_weighting must be 'none' or 'gaussian'; got '{knn_weighting}'")
        self.n_samples, self.positives, self.knn_k, self.knn_weighting = n_samples, positives, knn_k, knn_weighting
        self.temperatures = temperatures
        self.noise_skip, self.noise_skip_anneal = float(noise_skip), float(noise_skip_anneal)
        if not 0.0 <= self.noise_skip_anneal <= 1.0:
            raise ValueError(f"policy.noise_skip_anneal must be a fraction of training in [0, 1]; got {noise_skip_anneal}")
        if self.noise_skip_anneal > 0:  # saved with the weights: a checkpoint generates with the skip it was at
            self.register_buffer("train_progress", torch.zeros(()))

    def set_train_progress(self, fraction: float) -> None:
        if self.noise_skip_anneal > 0:
            self.train_progress.fill_(fraction)

    def _skip(self) -> float | torch.Tensor:
        """``noise_skip``, decayed linearly to 0 over the first ``noise_skip_anneal`` of training when that is > 0
        (then a 0-d tensor on the model's device: no host sync per forward)."""
        if self.noise_skip_anneal <= 0:
            return self.noise_skip
        return self.noise_skip * (1.0 - self.train_progress / self.noise_skip_anneal).clamp(min=0.0)

    def current_noise_skip(self) -> float:
        return float(self._skip())

    def _generate(self, noise: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """One network call; ``noise_skip`` > 0 adds the noise itself to the output, so that samples start as wide
        as the noise (the U-Net's GroupNorm normalises any input gain away) and collapsing them is work."""
        out = self.model(noise, cond)
        if not self.noise_skip:
            return out
        return out + self._skip() * noise

    def _positives(self, batch: dict, target: torch.Tensor):
        """(B, Tp, Da) demos -> (B, P, Tp, Da) positives of each observation and their (B, P) weights (or None)."""
        if self.positives == "self":
            return target[:, None], None
        nobs = self.normalizer.normalize_obs({k: batch["obs"][k][:, : self.n_obs_steps] for k in self.obs_encoder.low_dim_keys})
        feats = torch.cat([nobs[k].flatten(1) for k in self.obs_encoder.low_dim_keys], dim=-1)
        idx, dist = knn_with_distances(feats, min(self.knn_k, len(feats)))  # min: a short last batch
        weights = neighbour_weights(dist) if self.knn_weighting == "gaussian" else None
        return target[idx], weights

    def compute_loss(self, batch: dict) -> tuple[torch.Tensor, dict]:
        cond = self.encode_obs(batch["obs"])  # (B, C)
        target = self.normalized_action(batch)  # (B, Tp, Da)
        B, G = target.shape[0], self.n_samples
        # (B, G, Tp, Da) noise may come with the batch (reproducing a step exactly); otherwise it is drawn here
        noise = batch["noise"].flatten(0, 1) if "noise" in batch else torch.randn(B * G, *target.shape[1:],
                                                                                  device=target.device)
        gen = rearrange(self._generate(noise, cond.repeat_interleave(G, 0)), "(b g) t d -> b g t d", g=G)
        pos, w_pos = self._positives(batch, target)
        # every process's groups, so the field's batch-global normalisers are the global batch's (one process: as is)
        gen_all, pos_all = gather_groups(gen.flatten(2)), gather_groups(pos.flatten(2))
        w_all = None if w_pos is None else gather_groups(w_pos)
        loss, info = drifting_loss(gen_all, pos_all, weight_pos=w_all, temperatures=self.temperatures)
        logs = {f"drift/{k}": v.item() for k, v in info.items()}
        logs["mse_to_demo"] = (gen.detach() - target[:, None]).square().mean().item()
        # the global mean; DDP averages gradients over processes, so scale back up to their sum
        return loss.mean() * world()[1], logs

    def generate(self, cond: torch.Tensor) -> torch.Tensor:
        noise = torch.randn(cond.shape[0], self.horizon, self.action_dim, device=cond.device)
        return self._generate(noise, cond)
