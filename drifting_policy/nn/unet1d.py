"""Diffusion Policy's 1-D temporal U-Net with FiLM conditioning (Chi et al. 2023, ConditionalUnet1D).

Input and output are action chunks ``(B, Tp, Da)``. Every residual block is modulated (scale and bias) by a
condition vector: the flattened observation features, plus a sinusoidal step embedding when the head needs one
(diffusion). The drifting and BC heads build it with ``step_embed_dim=0`` and call it without a step.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
from einops import rearrange


class SinusoidalEmbedding(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        """(B,) -> (B, dim)"""
        half = self.dim // 2
        freqs = torch.exp(-math.log(10000) * torch.arange(half, device=t.device) / (half - 1))
        angles = t.float()[:, None] * freqs[None]
        return torch.cat([angles.sin(), angles.cos()], dim=-1)


def conv_block(c_in: int, c_out: int, kernel_size: int, n_groups: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv1d(c_in, c_out, kernel_size, padding=kernel_size // 2), nn.GroupNorm(n_groups, c_out), nn.Mish()
    )


class FiLMResBlock(nn.Module):
    """Two conv blocks; the condition scales and shifts the features between them."""

    def __init__(self, c_in: int, c_out: int, cond_dim: int, kernel_size: int, n_groups: int):
        super().__init__()
        self.block1 = conv_block(c_in, c_out, kernel_size, n_groups)
        self.block2 = conv_block(c_out, c_out, kernel_size, n_groups)
        self.film = nn.Sequential(nn.Mish(), nn.Linear(cond_dim, 2 * c_out))
        self.skip = nn.Conv1d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """x (B, C_in, T), cond (B, cond_dim) -> (B, C_out, T)"""
        scale, bias = rearrange(self.film(cond), "b (two c) -> two b c 1", two=2)
        h = self.block1(x) * scale + bias
        return self.block2(h) + self.skip(x)


class ConditionalUnet1D(nn.Module):
    def __init__(
        self,
        action_dim: int,
        global_cond_dim: int,
        down_dims: tuple[int, ...] = (256, 512, 1024),
        kernel_size: int = 5,
        n_groups: int = 8,
        step_embed_dim: int = 128,
    ):
        super().__init__()
        self.step_embed_dim = step_embed_dim
        if step_embed_dim:
            self.step_encoder = nn.Sequential(
                SinusoidalEmbedding(step_embed_dim),
                nn.Linear(step_embed_dim, 4 * step_embed_dim),
                nn.Mish(),
                nn.Linear(4 * step_embed_dim, step_embed_dim),
            )
        cond_dim = step_embed_dim + global_cond_dim
        dims = [action_dim, *down_dims]
        pairs = list(zip(dims[:-1], dims[1:]))
        block = lambda a, b: FiLMResBlock(a, b, cond_dim, kernel_size, n_groups)  # noqa: E731

        self.down = nn.ModuleList()
        for i, (c_in, c_out) in enumerate(pairs):
            last = i == len(pairs) - 1
            resample = nn.Identity() if last else nn.Conv1d(c_out, c_out, 3, stride=2, padding=1)
            self.down.append(nn.ModuleList([block(c_in, c_out), block(c_out, c_out), resample]))
        self.mid = nn.ModuleList([block(down_dims[-1], down_dims[-1]), block(down_dims[-1], down_dims[-1])])
        self.up = nn.ModuleList()
        for c_in, c_out in reversed(pairs[1:]):  # every up level upsamples; the top skip is unused (as in DP)
            upsample = nn.ConvTranspose1d(c_in, c_in, 4, stride=2, padding=1)
            self.up.append(nn.ModuleList([block(2 * c_out, c_in), block(c_in, c_in), upsample]))
        self.final = nn.Sequential(
            conv_block(down_dims[0], down_dims[0], kernel_size, n_groups), nn.Conv1d(down_dims[0], action_dim, 1)
        )
        self.downsamples = len(pairs) - 1

    def forward(self, x: torch.Tensor, global_cond: torch.Tensor, step: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, Tp, Da), global_cond (B, global_cond_dim), step (B,) or None -> (B, Tp, Da)"""
        if x.shape[1] % (2**self.downsamples):
            raise ValueError(f"horizon {x.shape[1]} must be divisible by {2 ** self.downsamples} for this U-Net depth")
        cond = global_cond
        if self.step_embed_dim:
            if step is None:
                raise ValueError("this U-Net was built with a step embedding; pass `step`")
            step = step.expand(x.shape[0]) if step.ndim == 0 else step
            cond = torch.cat([self.step_encoder(step), global_cond], dim=-1)
        h = rearrange(x, "b t d -> b d t")
        skips = []
        for res1, res2, downsample in self.down:
            h = res2(res1(h, cond), cond)
            skips.append(h)
            h = downsample(h)
        for res in self.mid:
            h = res(h, cond)
        for res1, res2, upsample in self.up:
            h = torch.cat([h, skips.pop()], dim=1)
            h = upsample(res2(res1(h, cond), cond))
        return rearrange(self.final(h), "b d t -> b t d")
