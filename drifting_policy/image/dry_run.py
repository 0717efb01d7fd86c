"""Dry run of a config: build the generator and encoder (on the meta device: counts, no memory), push a synthetic
ImageNet-style folder through the real data pipeline (JPEG reader, latent cache with a tiny random VAE when the
config is latent) into the queues, draw one step's batch, and list the feature sets the loss would use."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

from drifting_policy.image.encoders import LatentMAE
from drifting_policy.image.features import feature_sets
from drifting_policy.image.models import PAPER_PARAMS, build_dit, count_parameters


def make_synthetic_imagenet(root: str | Path, n_classes: int = 3, per_class: int = 2, seed: int = 0) -> Path:
    """``root/train/n0000000k/*.JPEG`` with random images of assorted sizes (what a real ImageNet copy looks like)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for c in range(n_classes):
        d = Path(root) / "train" / f"n{c:08d}"
        d.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            h, w = rng.integers(200, 400, size=2)
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(d / f"n{c:08d}_{i}.JPEG")
    return Path(root)


def tiny_vae(path: str | Path, latent_channels: int = 4):
    """A random diffusers AutoencoderKL with SD-VAE's 8x downsampling and few channels, saved to ``path``."""
    from diffusers import AutoencoderKL

    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=latent_channels,
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                        block_out_channels=(8, 8, 16, 16), layers_per_block=1, norm_num_groups=4, sample_size=64)
    vae.save_pretrained(str(path))
    return vae


def dry_run(cfg) -> dict:
    from drifting_policy.image import data as D
    from drifting_policy.image.queue import QUEUE_DTYPES, ClassQueue, GlobalQueue

    dc = cfg.data
    report = {}
    gen = build_dit(cfg.model.size, dc.num_classes, device="meta", n_context=cfg.model.get("n_context", 16),
                    time_conditioned=cfg.method == "flow_matching")
    n = count_parameters(gen)
    report["generator_params"] = n
    ref = PAPER_PARAMS.get(cfg.model.size)
    print(f"generator {cfg.model.size}: {n / 1e6:.2f}M parameters"
          + (f" (paper {ref / 1e6:.0f}M, {100 * (n / ref - 1):+.2f}%)" if ref else ""))
    ec = cfg.get("encoder") or {}
    encoder = None
    if ec.get("width"):
        with torch.device("meta"):
            encoder = LatentMAE(dc.channels, ec.width, tuple(ec.blocks), input_patch=ec.get("input_patch", 1))
        report["encoder_params"] = count_parameters(encoder)
        print(f"encoder latent-MAE width {ec.width} blocks {list(ec.blocks)}: {report['encoder_params'] / 1e6:.2f}M")
    with tempfile.TemporaryDirectory() as tmp:
        root = make_synthetic_imagenet(Path(tmp) / "imagenet")
        if dc.kind == "latents":
            tiny_vae(Path(tmp) / "vae", dc.channels)
            cache = D.cache_latents(str(root), str(Path(tmp) / "vae"), str(Path(tmp) / "latents"),
                                    size=8 * dc.image_size, batch_size=2)
            source = D.LatentSource(str(cache))
        elif dc.kind == "imagenet_pixels":
            source = D.LoaderSource(D.ImageFolderDataset(str(root), dc.image_size), batch_size=2, workers=0)
        else:
            raise ValueError(f"dry runs are for ImageNet configs (data.kind latents / imagenet_pixels), not {dc.kind}")
        shape = (dc.channels, dc.image_size, dc.image_size)
        qdtype = QUEUE_DTYPES[dc.get("queue_dtype", "float32")]
        full = dc.num_classes * cfg.drift.class_queue * int(np.prod(shape)) * torch.empty((), dtype=qdtype).itemsize
        print(f"class queue at full size: {full / 2**30:.2f} GiB per process ({dc.get('queue_dtype', 'float32')})")
        # Only the synthetic folder's classes get a queue here, so a dry run fits in a laptop's memory.
        cq = ClassQueue(min(dc.num_classes, 3), cfg.drift.class_queue, shape, qdtype)
        gq = GlobalQueue(cfg.drift.global_queue, shape, qdtype)
        for _ in range(3):
            x, y = source.next(2)
            cq.push(x, y)
            gq.push(x)
        print(f"data pipeline: {dc.kind} batch {tuple(x.shape)} range [{float(x.min()):.2f}, {float(x.max()):.2f}]; "
              f"queued per class {cq.count[:3].tolist()}, global {int(gq.count[0])}")
        report["batch_shape"] = tuple(x.shape)
    with torch.device("meta"):
        sets = feature_sets(torch.empty(1, cfg.drift.n_gen, *shape), encoder, ec.get("use_raw", True),
                            ec.get("loc_max_size"))
    report["feature_sets"] = {k: (v.shape[0], v.shape[-1]) for k, v in sets.items()}
    print(f"feature sets: {len(sets)} drifting_loss calls, {sum(v.shape[0] for v in sets.values())} groups per class")
    d = cfg.drift
    print(f"per step: {d.classes_per_step} classes x {d.n_gen} generated = batch {d.classes_per_step * d.n_gen}; "
          f"{d.n_pos} positives, {d.n_unc} unconditional negatives per class")
    return report

