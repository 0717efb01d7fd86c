"""One-step sampling (drifting, 1 NFE at a chosen CFG scale; flow matching with Euler steps), npz and PNG grids,
and the generator of a training checkpoint."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf
from PIL import Image

from drifting_policy.image.flow_matching import euler_sample
from drifting_policy.image.models import build_generator
from drifting_policy.utils import checkpoint as ckpt
from drifting_policy.utils.io import atomic_write

WEIGHTS = ("ema", "model")


def load_generator(path: str | Path, weights: str = "ema", device="cpu"):
    """(generator in eval mode with the checkpoint's ``weights``, the run's config, the checkpoint folder) from a
    checkpoint folder, a ``checkpoints/`` folder or a run folder (its newest checkpoint). Only ``config.yaml`` and
    safetensors files are read: nothing from a checkpoint is unpickled or executed."""
    if weights not in WEIGHTS:
        raise ValueError(f"weights must be one of {WEIGHTS}; got {weights!r}")
    folder = ckpt.checkpoint_folder(path)
    cfg = OmegaConf.create(ckpt.read_config(folder))
    model = build_generator(cfg)
    ckpt.load_weights(model, folder / f"{weights}.safetensors")
    return model.to(device).eval(), cfg, folder


@torch.no_grad()
def generate(model, labels: torch.Tensor, cfg_scale: float = 1.0, seed: int = 0, nfe: int = 1,
             batch: int = 500, device="cpu") -> torch.Tensor:
    """labels (N,) -> samples (N, C, H, W) on CPU. A time-conditioned model (flow matching) is integrated with
    ``nfe`` Euler steps; a drifting generator takes one step and the CFG scale as input."""
    model.eval()
    g = torch.Generator(device).manual_seed(seed)
    out = []
    for s in range(0, len(labels), batch):
        y = labels[s : s + batch].to(device)
        noise, style = model.random_inputs(len(y), g, device)
        if model.time_embed is not None:
            out.append(euler_sample(model, noise, y, nfe).cpu())
        else:
            out.append(model(noise, y, torch.full((len(y),), float(cfg_scale), device=device), style).float().cpu())
    return torch.cat(out)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] float (N, C, H, W) -> uint8."""
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def decode_latents(z: torch.Tensor, vae_path: str, scaling: float, device="cpu", batch: int = 16) -> torch.Tensor:
    """SD-VAE latents (N, 4, h, w) -> images (N, 3, 8h, 8w) in [-1, 1], with a LOCAL diffusers AutoencoderKL."""
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(vae_path, local_files_only=True).to(device).eval()
    with torch.no_grad():
        return torch.cat([vae.decode(z[s : s + batch].to(device) / scaling).sample.cpu()
                          for s in range(0, len(z), batch)])


def save_grid(images_uint8: torch.Tensor, path: str | Path, nrow: int, pad: int = 2) -> Path:
    """(N, C, H, W) uint8 -> one PNG with ``nrow`` images per row (written atomically)."""
    n, c, h, w = images_uint8.shape
    rows = (n + nrow - 1) // nrow
    grid = np.full((rows * (h + pad) + pad, nrow * (w + pad) + pad, c), 255, dtype=np.uint8)
    for i, im in enumerate(images_uint8.permute(0, 2, 3, 1).numpy()):
        r, k = divmod(i, nrow)
        grid[pad + r * (h + pad) : pad + r * (h + pad) + h, pad + k * (w + pad) : pad + k * (w + pad) + w] = im
    image = Image.fromarray(grid[..., 0] if c == 1 else grid)
    return atomic_write(path, lambda tmp: image.save(tmp, format="PNG"))


def save_npz(images_uint8: torch.Tensor, labels: torch.Tensor, path: str | Path) -> Path:
    """``arr_0`` (N, H, W, C) uint8 (the layout the ADM FID suite reads) and ``labels`` (N,)."""
    arrays = {"arr_0": images_uint8.permute(0, 2, 3, 1).numpy(), "labels": labels.numpy()}

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a file object: given a name, np.savez would append ".npz" to the temp name
            np.savez(f, **arrays)

    return atomic_write(path, write)


def class_grid_labels(num_classes: int, per_class: int) -> torch.Tensor:
    """Labels for a grid with one row per class: (num_classes * per_class,)."""
    return torch.arange(num_classes).repeat_interleave(per_class)
