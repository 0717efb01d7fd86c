"""In-training evaluation on small data: EMA samples -> classifier-space Frechet distance, KID and accuracy,
plus a grid PNG with one row per class (``<run>/samples/step_<k>[_nfe<n>].png``)."""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from drifting_policy.image.classifier import load_classifier, small_data_metrics
from drifting_policy.image.sample import class_grid_labels, generate, save_grid, to_uint8


def real_eval_images(dcfg) -> torch.Tensor:
    from drifting_policy.image import data as D

    if dcfg.kind == "fmnist":
        return D.load_fashion_mnist("test", dcfg.get("root", D.FMNIST_DIR), dcfg.image_size)[0]
    if dcfg.kind == "digits":
        return D.load_digits_tensor()[0]
    raise ValueError(f"small-data evaluation supports data.kind fmnist or digits, not {dcfg.kind!r}")


def evaluate_run(cfg, ema_model, step: int, grid_per_class: int = 10) -> dict[str, float]:
    """Metrics of ``ema_model`` (the EMA generator) at ``step``; sampled on the CPU, on a copy, so that training's
    modules stay where they are."""
    ec = cfg.eval
    clf = load_classifier(ec.classifier)
    net = copy.deepcopy(ema_model).cpu().eval()
    labels = class_grid_labels(cfg.data.num_classes, ec.n_per_class)
    real = real_eval_images(cfg.data)
    grid_idx = (torch.arange(cfg.data.num_classes).unsqueeze(1) * ec.n_per_class
                + torch.arange(min(grid_per_class, ec.n_per_class))).flatten()
    settings = [(1, "")] if cfg.method == "drifting" else [(n, f"_nfe{n}") for n in ec.get("nfe", [1, 50])]
    out: dict[str, float] = {}
    for nfe, tag in settings:
        x = generate(net, labels, ec.cfg_scale, seed=12345, nfe=nfe)
        for k, v in small_data_metrics(clf, x, labels, real).items():
            out[f"eval{tag}/{k}"] = v
        save_grid(to_uint8(x[grid_idx]), Path(cfg.out_dir) / "samples" / f"step_{step:08d}{tag}.png",
                  nrow=min(grid_per_class, ec.n_per_class))
    return out
