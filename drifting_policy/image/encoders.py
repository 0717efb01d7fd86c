"""Latent-MAE feature encoder: a GroupNorm ResNet with basic blocks and a U-Net decoder (docs/notes/field.md section 2).

Trained by masked reconstruction (50% of 2x2 patches zeroed, L2 on the masked regions only) with an optional
classification fine-tune. After training it is frozen and ``feature_maps`` gives the multi-scale maps that the
drifting loss compares: the stem, every 2nd block and each stage output.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from drifting_policy.utils.checkpoint import load_weights
from drifting_policy.utils.io import atomic_write_json, atomic_write_tensors, read_json


def group_norm(ch: int) -> nn.GroupNorm:
    groups = min(32, max(1, ch // 4))
    while ch % groups:
        groups -= 1
    return nn.GroupNorm(groups, ch)


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.norm1 = group_norm(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.norm2 = group_norm(cout)
        self.skip = None
        if stride != 1 or cin != cout:
            self.skip = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), group_norm(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.norm1(self.conv1(x)))
        h = self.norm2(self.conv2(h))
        return F.relu(h + (x if self.skip is None else self.skip(x)))


class UpBlock(nn.Module):
    """x2 upsample, concatenate the encoder skip at that resolution, two 3x3 convs."""

    def __init__(self, cin: int, cskip: int, cout: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin + cskip, cout, 3, 1, 1), group_norm(cout), nn.SiLU(),
            nn.Conv2d(cout, cout, 3, 1, 1), group_norm(cout), nn.SiLU(),
        )  # fmt: skip

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=skip.shape[-2:], mode="nearest")
        return self.body(torch.cat([x, skip], dim=1))


class LatentMAE(nn.Module):
    """ResNet encoder (3x3 stride-1 stem, stages of widths C, 2C, 4C, 8C, strides 1, 2, 2, 2) + U-Net decoder."""

    def __init__(
        self,
        in_channels: int,
        width: int = 256,
        blocks: tuple[int, ...] = (3, 4, 6, 3),
        num_classes: int = 0,
        mask_ratio: float = 0.5,
        mask_patch: int = 2,
        input_patch: int = 1,
    ):
        super().__init__()
        self.in_channels, self.mask_ratio, self.mask_patch = in_channels, mask_ratio, mask_patch
        # input_patch > 1 folds p x p pixel patches into channels first (256^2 x 3 -> 32^2 x 192 with p = 8), so a
        # pixel-space encoder works at latent resolution; the mask patch then counts in that folded grid.
        self.input_patch = input_patch
        widths = [width * 2**i for i in range(len(blocks))]
        cin0 = in_channels * input_patch**2
        self.stem = nn.Sequential(nn.Conv2d(cin0, width, 3, 1, 1, bias=False), group_norm(width), nn.ReLU())
        self.stages = nn.ModuleList()
        cin = width
        for i, (w, n) in enumerate(zip(widths, blocks, strict=True)):
            stride = 1 if i == 0 else 2
            self.stages.append(nn.Sequential(*[BasicBlock(cin if j == 0 else w, w, stride if j == 0 else 1)
                                               for j in range(n)]))
            cin = w
        skips = [width] + widths[:-1]  # the stem and stage outputs above the deepest one, deepest first below
        self.up = nn.ModuleList()
        cur = widths[-1]
        for cskip in reversed(skips):
            self.up.append(UpBlock(cur, cskip, cskip))
            cur = cskip
        self.head = nn.Conv2d(cur, cin0, 1)
        self.classifier = nn.Linear(widths[-1], num_classes) if num_classes else None

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """x (B, C, H, W) -> [stem, stage 1, ..., stage K] outputs."""
        outs = [self.stem(F.pixel_unshuffle(x, self.input_patch))]
        for stage in self.stages:
            outs.append(stage(outs[-1]))
        return outs

    def feature_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The maps the drifting loss uses: the stem, every 2nd block of every stage and each stage output."""
        maps = [self.stem(F.pixel_unshuffle(x, self.input_patch))]
        h = maps[0]
        for stage in self.stages:
            for j, block in enumerate(stage):
                h = block(h)
                if j % 2 == 1 or j == len(stage) - 1:
                    maps.append(h)
        return maps

    def random_mask(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """(B, 1, H, W) float mask, 1 on the masked patches: exactly ``mask_ratio`` of the p x p patches per image."""
        B, _, H, W = x.shape
        p = self.mask_patch * self.input_patch
        n = (H // p) * (W // p)
        scores = torch.rand(B, n, generator=generator, device=x.device)
        ranks = scores.argsort(1).argsort(1)
        mask = (ranks < round(n * self.mask_ratio)).float().view(B, 1, H // p, W // p)
        return mask.repeat_interleave(p, 2).repeat_interleave(p, 3)

    def reconstruct(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        outs = self.encode(x * (1 - mask))
        h = outs[-1]
        for up, skip in zip(self.up, reversed(outs[:-1]), strict=True):
            h = up(h, skip)
        return F.pixel_shuffle(self.head(h), self.input_patch), outs

    def mae_loss(self, x: torch.Tensor, generator: torch.Generator | None = None):
        """Masked-region L2 (mean over masked pixels and channels); also returns the deepest map for a classifier."""
        mask = self.random_mask(x, generator)
        recon, outs = self.reconstruct(x, mask)
        err = (recon - x).square() * mask
        loss = err.sum() / (mask.sum() * x.shape[1]).clamp_min(1.0)
        return loss, outs[-1]

    def classify(self, deepest: torch.Tensor) -> torch.Tensor:
        if self.classifier is None:
            raise ValueError("this LatentMAE was built with num_classes=0; no classification head")
        return self.classifier(deepest.mean(dim=(2, 3)))


def save_encoder(model: LatentMAE, args: dict, out_dir: str | Path, state: dict[str, torch.Tensor] | None = None):
    """``encoder.safetensors`` (``state``, default the model's) + ``encoder.json`` (constructor arguments), each
    written atomically; the JSON last, so a folder with it is complete."""
    out = Path(out_dir)
    atomic_write_tensors(out / "encoder.safetensors", state if state is not None else model.state_dict())
    atomic_write_json(out / "encoder.json", args)


def load_encoder(path: str | Path, device="cpu") -> LatentMAE:
    """A frozen encoder in eval mode from a folder written by ``save_encoder``."""
    path = Path(path)
    if not (path / "encoder.json").exists():
        raise FileNotFoundError(f"{path / 'encoder.json'}: missing; train the encoder first (scripts/train_image_encoder.py)")
    args = read_json(path / "encoder.json")
    model = LatentMAE(**{**args, "blocks": tuple(args["blocks"])})
    load_weights(model, path / "encoder.safetensors")
    model.requires_grad_(False)
    return model.to(device).eval()
