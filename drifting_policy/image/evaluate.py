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


def with_weights(model, weights: dict[str, torch.Tensor]):
    m = copy.deepcopy(model)
    m.load_state_dict(weights)
    return m.eval()


def evaluate_run(cfg, model, ema: dict[str, torch.Tensor], step: int, grid_per_class: int = 10) -> dict[str, float]:
    ec = cfg.eval
    clf = load_classifier(ec.classifier)
    net = with_weights(model, ema).cpu()
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
