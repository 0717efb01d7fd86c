"""Observation encoders built from ``shape_meta``.

``ObsEncoder`` maps a dict of normalised observations ``{key: (N, ...)}`` to one feature vector ``(N, F)``:
low-dim keys are concatenated (then optionally through a small MLP), each camera goes through its own trunk with a
SpatialSoftmax keypoint head, as in Diffusion Policy's robomimic-derived vision encoder. Trunks:
- ``resnet18`` (the paper's): ResNet-18 without pretrained weights, BatchNorm replaced by GroupNorm (batch statistics
  hurt EMA policies), 512 channels at 1/32 resolution;
- ``conv`` (the cpu scale's): three 3x3 convolutions (strides 2, 2, 1) with GroupNorm and Mish, ``2 * width``
  channels at 1/4 resolution: a few percent of ResNet-18's compute, so a CPU can train it.
``resize`` shrinks images (area interpolation) before the crop, for tasks whose detail allows it.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from einops import rearrange

TRUNKS = ("resnet18", "conv")


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


def conv_trunk(width: int) -> nn.Sequential:
    """(N, 3, H, W) -> (N, 2 * width, H / 4, W / 4)."""
    def block(c_in, c_out, stride):
        return [nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1), nn.GroupNorm(max(1, c_out // 16), c_out), nn.Mish()]

    return nn.Sequential(*block(3, width, 2), *block(width, 2 * width, 2), *block(2 * width, 2 * width, 1))


class CameraEncoder(nn.Module):
    """One camera: resize (optional), crop, trunk, SpatialSoftmax keypoints, linear head."""

    def __init__(self, image_shape: tuple[int, int, int], crop_shape: tuple[int, int] | None, feature_dim: int = 64,
                 num_keypoints: int = 32, trunk: str = "resnet18", width: int = 32,
                 resize: tuple[int, int] | None = None):
        super().__init__()
        if trunk not in TRUNKS:
            raise ValueError(f"policy.camera_trunk must be one of {TRUNKS}; got {trunk!r}")
        if trunk == "resnet18":
            resnet = torchvision.models.resnet18(weights=None)
            self.trunk, channels = _batchnorm_to_groupnorm(nn.Sequential(*list(resnet.children())[:-2])), 512
        else:
            self.trunk, channels = conv_trunk(width), 2 * width
        self.pool = SpatialSoftmax(channels, num_keypoints)
        self.head = nn.Linear(2 * num_keypoints, feature_dim)
        self.resize = tuple(resize) if resize else None
        self.crop_shape = tuple(crop_shape) if crop_shape else None
        self.image_shape = tuple(image_shape)
        size = self.resize or tuple(image_shape[1:])
        if self.crop_shape and (self.crop_shape[0] > size[0] or self.crop_shape[1] > size[1]):
            raise ValueError(f"crop_shape {list(self.crop_shape)} is larger than the {'resized ' if self.resize else ''}"
                             f"image {list(size)}")

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
        if self.resize is not None and tuple(x.shape[-2:]) != self.resize:
            x = F.interpolate(x, size=self.resize, mode="area")
        return self.head(self.pool(self.trunk(self.crop(x))))


class ObsEncoder(nn.Module):
    def __init__(self, shape_meta: dict, state_mlp_dims: list[int] | None = None, image_feature_dim: int = 64,
                 crop_shape: dict | None = None, camera_trunk: str = "resnet18", camera_width: int = 32,
                 camera_resize: list[int] | None = None):
        """``state_mlp_dims`` None or [] keeps low-dim keys as they are (Diffusion Policy's low-dim setting);
        ``crop_shape`` maps rgb keys to (h, w) crops (of the resized image when ``camera_resize`` is set)."""
        super().__init__()
        obs_meta = shape_meta["obs"]
        self.rgb_keys = sorted(k for k, m in obs_meta.items() if m.get("type", "low_dim") == "rgb")
        self.low_dim_keys = sorted(k for k, m in obs_meta.items() if m.get("type", "low_dim") == "low_dim")
        unknown = {k: m.get("type") for k, m in obs_meta.items() if m.get("type", "low_dim") not in ("rgb", "low_dim")}
        if unknown:
            raise ValueError(f"shape_meta.obs types must be 'rgb' or 'low_dim'; got {unknown}")
        crop_shape = crop_shape or {}
        self.cameras = nn.ModuleDict(
            {k: CameraEncoder(obs_meta[k]["shape"], crop_shape.get(k), image_feature_dim, trunk=camera_trunk,
                              width=camera_width, resize=camera_resize) for k in self.rgb_keys}
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
