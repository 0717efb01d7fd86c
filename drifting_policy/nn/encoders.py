"""Observation encoders built from ``shape_meta``.

``ObsEncoder`` maps a dict of normalised observations ``{key: (N, ...)}`` to one feature vector ``(N, F)``:
low-dim keys are concatenated (then optionally through a small MLP), each camera goes through its own ResNet-18
(no pretrained weights; BatchNorm replaced by GroupNorm, since batch statistics hurt EMA policies) with a
SpatialSoftmax keypoint head, as in Diffusion Policy's robomimic-derived vision encoder.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torchvision
from einops import rearrange


class SpatialSoftmax(nn.Module):
    """(N, C, H, W) -> (N, 2K): the expected image coordinates in [-1, 1] of K learned keypoint heat maps."""

    def __init__(self, in_channels: int, num_keypoints: int = 32):
        super().__init__()
        self.keypoints = nn.Conv2d(in_channels, num_keypoints, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        heat = self.keypoints(x)
        _, _, h, w = heat.shape
        attention = rearrange(heat, "n k h w -> n k (h w)").softmax(-1)
        ys, xs = torch.meshgrid(
            torch.linspace(-1, 1, h, device=x.device), torch.linspace(-1, 1, w, device=x.device), indexing="ij"
        )
        grid = torch.stack([xs.flatten(), ys.flatten()], dim=-1)  # (HW, 2)
        return rearrange(attention @ grid, "n k two -> n (k two)")


def _batchnorm_to_groupnorm(module: nn.Module) -> nn.Module:
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            setattr(module, name, nn.GroupNorm(child.num_features // 16, child.num_features))
        else:
            _batchnorm_to_groupnorm(child)
    return module


class CameraEncoder(nn.Module):
    """One camera: crop, ResNet-18 trunk (GroupNorm), SpatialSoftmax keypoints, linear head."""

    def __init__(self, image_shape: tuple[int, int, int], crop_shape: tuple[int, int] | None, feature_dim: int = 64,
                 num_keypoints: int = 32):
        super().__init__()
        resnet = torchvision.models.resnet18(weights=None)
        self.trunk = _batchnorm_to_groupnorm(nn.Sequential(*list(resnet.children())[:-2]))
        self.pool = SpatialSoftmax(512, num_keypoints)
        self.head = nn.Linear(2 * num_keypoints, feature_dim)
        self.crop_shape = tuple(crop_shape) if crop_shape else None
        self.image_shape = tuple(image_shape)

    def crop(self, x: torch.Tensor) -> torch.Tensor:
        """Random crop while training (one offset per image), centre crop in evaluation."""
        if self.crop_shape is None:
            return x
        n, _, h, w = x.shape
        ch, cw = self.crop_shape
        if not self.training:
            top, left = (h - ch) // 2, (w - cw) // 2
            return x[:, :, top : top + ch, left : left + cw]
        tops = torch.randint(0, h - ch + 1, (n,)).tolist()
        lefts = torch.randint(0, w - cw + 1, (n,)).tolist()
        return torch.stack([img[:, t : t + ch, left : left + cw] for img, t, left in zip(x, tops, lefts)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) in [-1, 1] -> (N, feature_dim)"""
        return self.head(self.pool(self.trunk(self.crop(x))))


class ObsEncoder(nn.Module):
    def __init__(self, shape_meta: dict, state_mlp_dims: list[int] | None = None, image_feature_dim: int = 64,
                 crop_shape: dict | None = None):
        """``state_mlp_dims`` None or [] keeps low-dim keys as they are (Diffusion Policy's low-dim setting);
        ``crop_shape`` maps rgb keys to (h, w) crops."""
        super().__init__()
        obs_meta = shape_meta["obs"]
        self.rgb_keys = sorted(k for k, m in obs_meta.items() if m.get("type", "low_dim") == "rgb")
        self.low_dim_keys = sorted(k for k, m in obs_meta.items() if m.get("type", "low_dim") == "low_dim")
        unknown = {k: m.get("type") for k, m in obs_meta.items() if m.get("type", "low_dim") not in ("rgb", "low_dim")}
        if unknown:
            raise ValueError(f"shape_meta.obs types must be 'rgb' or 'low_dim'; got {unknown}")
        crop_shape = crop_shape or {}
        self.cameras = nn.ModuleDict(
            {k: CameraEncoder(obs_meta[k]["shape"], crop_shape.get(k), image_feature_dim) for k in self.rgb_keys}
        )
        low_dim = sum(int(torch.tensor(obs_meta[k]["shape"]).prod()) for k in self.low_dim_keys)
        if state_mlp_dims:
            layers, d = [], low_dim
            for width in state_mlp_dims:
                layers += [nn.Linear(d, width), nn.Mish()]
                d = width
            self.state_mlp = nn.Sequential(*layers[:-1])
            state_dim = d
        else:
            self.state_mlp = nn.Identity()
            state_dim = low_dim
        self.feature_dim = state_dim * bool(self.low_dim_keys) + image_feature_dim * len(self.rgb_keys)

    def forward(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        """{key: (N, ...)} normalised -> (N, feature_dim)"""
        features = [self.cameras[k](obs[k]) for k in self.rgb_keys]
        if self.low_dim_keys:
            state = torch.cat([obs[k].flatten(1) for k in self.low_dim_keys], dim=-1)
            features.append(self.state_mlp(state))
        return torch.cat(features, dim=-1)
