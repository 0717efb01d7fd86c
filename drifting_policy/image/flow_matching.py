"""Flow-matching baseline on the same DiT backbone (time-conditioned), for drifting-vs-multi-step comparisons.

Linear path x_t = (1 - t) noise + t data, velocity target data - noise, t logit-normal; sampling integrates the
velocity with Euler steps from noise (t = 0) to data (t = 1): 1 NFE is a single step, 50 NFE the usual setting.
"""

from __future__ import annotations

import torch

from drifting_policy.image.models import N_STYLE


def _fixed_style(n: int, device) -> torch.Tensor:
    # Flow matching gets its randomness from the noise path; a constant style code keeps the condition clean.
    return torch.zeros(n, N_STYLE, dtype=torch.long, device=device)


def flow_matching_loss(model, x1: torch.Tensor, labels: torch.Tensor, generator: torch.Generator | None = None):
    """x1 (B, C, H, W) real samples, labels (B,) -> mean squared velocity error (scalar)."""
    x0 = torch.randn(x1.shape, generator=generator, device=x1.device)
    t = torch.sigmoid(torch.randn(x1.shape[0], generator=generator, device=x1.device))
    tt = t.view(-1, 1, 1, 1)
    xt = (1 - tt) * x0 + tt * x1
    ones = torch.ones(x1.shape[0], device=x1.device)
    v = model(xt, labels, ones, _fixed_style(x1.shape[0], x1.device), t=t)
    return (v.float() - (x1 - x0)).square().mean()


@torch.no_grad()
def euler_sample(model, noise: torch.Tensor, labels: torch.Tensor, nfe: int) -> torch.Tensor:
    """noise (B, C, H, W) -> samples after ``nfe`` Euler steps of the learned velocity field."""
    x = noise
    ones = torch.ones(x.shape[0], device=x.device)
    style = _fixed_style(x.shape[0], x.device)
    for i in range(nfe):
        t = torch.full((x.shape[0],), i / nfe, device=x.device)
        x = x + model(x, labels, ones, style, t=t).float() / nfe
    return x
