"""What every policy shares: the normaliser, the observation encoder, the 1-D U-Net backbone and the stateless
``predict_action`` contract. Heads (drifting, diffusion, BC) differ only in ``compute_loss`` and ``generate``."""

from __future__ import annotations

import torch
import torch.nn as nn
from einops import rearrange

from drifting_policy.data.normalizer import Normalizer
from drifting_policy.nn.encoders import ObsEncoder
from drifting_policy.nn.unet1d import ConditionalUnet1D


class Policy(nn.Module):
    uses_step = False  # whether the backbone gets a step (diffusion time) embedding

    def __init__(self, shape_meta: dict, n_obs_steps: int, n_action_steps: int, horizon: int,
                 down_dims=(256, 512, 1024), kernel_size: int = 5, n_groups: int = 8, step_embed_dim: int = 128,
                 state_mlp_dims=None, image_feature_dim: int = 64, crop_shape=None):
        super().__init__()
        if n_obs_steps - 1 + n_action_steps > horizon:
            raise ValueError(f"n_obs_steps - 1 + n_action_steps = {n_obs_steps - 1 + n_action_steps} exceeds horizon {horizon}")
        self.shape_meta = shape_meta
        self.n_obs_steps, self.n_action_steps, self.horizon = n_obs_steps, n_action_steps, horizon
        self.action_dim = int(shape_meta["action"]["shape"][0])
        self.normalizer = Normalizer(shape_meta)
        self.obs_encoder = ObsEncoder(shape_meta, state_mlp_dims, image_feature_dim, crop_shape)
        self.model = ConditionalUnet1D(
            self.action_dim, n_obs_steps * self.obs_encoder.feature_dim, tuple(down_dims), kernel_size, n_groups,
            step_embed_dim if self.uses_step else 0,
        )

    def forward(self, batch: dict) -> tuple[torch.Tensor, dict]:
        """DDP calls go through forward; it is the training loss."""
        return self.compute_loss(batch)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def encode_obs(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        """{key: (B, To, ...)} raw -> (B, To * F) conditioning. Extra keys and extra history frames are ignored."""
        nobs = self.normalizer.normalize_obs({k: v[:, : self.n_obs_steps] for k, v in obs.items()})
        batch = next(iter(nobs.values())).shape[0]
        feats = self.obs_encoder({k: v.flatten(0, 1) for k, v in nobs.items()})
        return rearrange(feats, "(b t) f -> b (t f)", b=batch)

    def compute_loss(self, batch: dict) -> tuple[torch.Tensor, dict]:
        raise NotImplementedError

    def set_train_progress(self, fraction: float) -> None:
        """The trainer calls this after every optimiser step with the fraction of training done (0..1), on the
        trained and the EMA policy alike; a policy whose recipe follows a schedule overrides it."""

    def generate(self, cond: torch.Tensor) -> torch.Tensor:
        """(B, C) conditioning -> (B, Tp, Da) normalised action chunk."""
        raise NotImplementedError

    @torch.no_grad()
    def predict_action(self, obs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """obs {key: (B, To, ...)} -> {"action": (B, Ta, Da), "action_pred": (B, Tp, Da)} in action units.
        The executed actions are those after the last observed step: ``pred[To-1 : To-1+Ta]``."""
        obs = {k: v.to(self.device) for k, v in obs.items()}
        pred = self.normalizer.unnormalize("action", self.generate(self.encode_obs(obs)))
        start = self.n_obs_steps - 1
        return {"action": pred[:, start : start + self.n_action_steps], "action_pred": pred}

    def normalized_action(self, batch: dict) -> torch.Tensor:
        return self.normalizer.normalize("action", batch["action"])
