"""What every policy shares: the normaliser, the observation encoder, the 1-D U-Net backbone and the stateless
``predict_action`` contract. Heads (drifting, diffusion, BC) differ only in ``compute_loss`` and ``generate``."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
import yaml
from einops import rearrange

from drifting_policy.data.normalizer import Normalizer
from drifting_policy.nn.encoders import ObsEncoder
from drifting_policy.nn.unet1d import ConditionalUnet1D
from drifting_policy.utils.checkpoint import load_weights, read_config
from drifting_policy.utils.io import atomic_write_tensors, atomic_write_text


class Policy(nn.Module):
    uses_step = False  # whether the backbone gets a step (diffusion time) embedding

    def __init__(self, shape_meta: dict, n_obs_steps: int, n_action_steps: int, horizon: int,
                 down_dims=(256, 512, 1024), kernel_size: int = 5, n_groups: int = 8, step_embed_dim: int = 128,
                 state_mlp_dims=None, image_feature_dim: int = 64, crop_shape=None, camera_trunk: str = "resnet18",
                 camera_width: int = 32, camera_resize=None):
        super().__init__()
        if n_obs_steps - 1 + n_action_steps > horizon:
            raise ValueError(f"n_obs_steps - 1 + n_action_steps = {n_obs_steps - 1 + n_action_steps} exceeds horizon {horizon}")
        self.shape_meta = shape_meta
        self.n_obs_steps, self.n_action_steps, self.horizon = n_obs_steps, n_action_steps, horizon
        self.action_dim = int(shape_meta["action"]["shape"][0])
        self.normalizer = Normalizer(shape_meta)
        self.obs_encoder = ObsEncoder(shape_meta, state_mlp_dims, image_feature_dim, crop_shape, camera_trunk,
                                      camera_width, camera_resize)
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

    name = "policy"  # the config's policy.name of each head

    @classmethod
    def from_config(cls, cfg: dict) -> Policy:
        """This head for a run config's ``policy`` and ``task`` blocks (plain dicts), weights random."""
        kwargs = dict(cfg["policy"])
        name = kwargs.pop("name")
        if name != cls.name:
            raise ValueError(f"config names policy '{name}', not '{cls.name}'")
        task = cfg["task"]
        return cls(task["shape_meta"], task["n_obs_steps"], task["n_action_steps"], task["horizon"],
                   crop_shape=task.get("crop_shape"), **kwargs)

    @classmethod
    def from_pretrained(cls, folder: str | Path, weights: str = "ema") -> Policy:
        """A policy from a folder written by ``save_pretrained`` or a training checkpoint folder (its ``weights``:
        "ema" or "model"; a save_pretrained folder has model weights only)."""
        folder = Path(folder)
        policy = cls.from_config(read_config(folder))
        file = folder / f"{weights}.safetensors"
        load_weights(policy, file if file.is_file() else folder / "model.safetensors")
        return policy

    def save_pretrained(self, folder: str | Path, config: dict) -> None:
        """Write ``model.safetensors`` (weights + fitted normaliser) and ``config.yaml`` (the run config's
        ``policy`` and ``task`` blocks, which rebuild this policy) into ``folder``."""
        missing = [k for k in ("policy", "task") if k not in config]
        if missing:
            raise KeyError(f"save_pretrained needs the run config's {missing} block(s) to rebuild the policy")
        folder = Path(folder)
        atomic_write_tensors(folder / "model.safetensors", self.state_dict())
        atomic_write_text(folder / "config.yaml", yaml.safe_dump({k: config[k] for k in ("policy", "task")},
                                                                  sort_keys=False))
