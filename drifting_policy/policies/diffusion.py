"""The Diffusion Policy baseline (Chi et al. 2023): DDPM with 100 training steps, epsilon prediction, sampled with
DDPM-100 or DDIM with fewer steps from the same weights (``set_sampler``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler

from drifting_policy.policies.base import Policy


class DiffusionPolicy(Policy):
    name = "diffusion"
    uses_step = True

    def __init__(self, *args, num_train_timesteps: int = 100, beta_schedule: str = "squaredcos_cap_v2",
                 clip_sample: bool = True, sampler: str = "ddpm", num_inference_steps: int = 100, **kwargs):
        super().__init__(*args, **kwargs)
        self.train_scheduler = DDPMScheduler(num_train_timesteps=num_train_timesteps, beta_schedule=beta_schedule,
                                             clip_sample=clip_sample, prediction_type="epsilon")
        self.set_sampler(sampler, num_inference_steps)

    def set_sampler(self, sampler: str, num_inference_steps: int) -> None:
        """Choose the inference sampler: "ddpm" (DP's default, 100 steps) or "ddim" (the fast variant)."""
        kinds = {"ddpm": DDPMScheduler, "ddim": DDIMScheduler}
        if sampler not in kinds:
            raise ValueError(f"policy.sampler must be one of {sorted(kinds)}; got '{sampler}'")
        self.sampler_name, self.num_inference_steps = sampler, int(num_inference_steps)
        self.sample_scheduler = kinds[sampler].from_config(self.train_scheduler.config)

    @property
    def nfe(self) -> int:
        return self.num_inference_steps

    def compute_loss(self, batch: dict) -> tuple[torch.Tensor, dict]:
        cond = self.encode_obs(batch["obs"])
        target = self.normalized_action(batch)
        noise = torch.randn_like(target)
        t = torch.randint(0, self.train_scheduler.config.num_train_timesteps, (len(target),), device=target.device)
        pred = self.model(self.train_scheduler.add_noise(target, noise, t), cond, t)
        loss = F.mse_loss(pred, noise)
        return loss, {}

    def generate(self, cond: torch.Tensor) -> torch.Tensor:
        scheduler = self.sample_scheduler
        scheduler.set_timesteps(self.num_inference_steps)
        x = torch.randn(cond.shape[0], self.horizon, self.action_dim, device=cond.device)
        for t in scheduler.timesteps:
            x = scheduler.step(self.model(x, cond, t.to(cond.device)), t, x).prev_sample
        return x
