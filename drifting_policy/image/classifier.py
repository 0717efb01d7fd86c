"""A small CNN classifier whose penultimate features define in-domain metrics for small data sets.

Frechet distance and KID in its 128-d feature space track sample quality on Fashion-MNIST / digits where
Inception is meaningless and slow on CPU; its argmax gives the class-conditional accuracy of generated samples.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from drifting_policy.image.metrics import frechet_from_features, kid
from drifting_policy.utils.checkpoint import load_weights
from drifting_policy.utils.io import atomic_folder, atomic_write_json, atomic_write_tensors, read_json


class SmallClassifier(nn.Module):
    def __init__(self, in_channels: int = 1, num_classes: int = 10, width: int = 32, feat_dim: int = 128):
        super().__init__()
        self.args = {"in_channels": in_channels, "num_classes": num_classes, "width": width, "feat_dim": feat_dim}
        w = width
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, w, 3, padding=1), nn.GroupNorm(8, w), nn.SiLU(),
            nn.Conv2d(w, 2 * w, 3, stride=2, padding=1), nn.GroupNorm(8, 2 * w), nn.SiLU(),
            nn.Conv2d(2 * w, 4 * w, 3, stride=2, padding=1), nn.GroupNorm(8, 4 * w), nn.SiLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * w, feat_dim), nn.SiLU(),
        )  # fmt: skip
        self.head = nn.Linear(feat_dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def train_classifier(x, y, num_classes: int, steps: int = 1500, batch: int = 128, lr: float = 2e-3, seed: int = 0,
                     out_dir: str | None = None) -> SmallClassifier:
    """AdamW on (x, y) with light augmentation (random shifts of 1/16 of the width); saved as safetensors + JSON if out_dir."""
    torch.manual_seed(seed)
    model = SmallClassifier(x.shape[1], num_classes)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    g = torch.Generator().manual_seed(seed)
    for step in tqdm(range(steps), desc="classifier"):
        idx = torch.randint(0, len(x), (batch,), generator=g)
        xb = x[idx]
        r = x.shape[-1] // 16  # shifts of up to 2 pixels at 32x32, none on 8x8 digits
        dx, dy = torch.randint(-r, r + 1, (2,), generator=g).tolist()
        xb = torch.roll(xb, (dx, dy), dims=(2, 3))
        for group in opt.param_groups:
            group["lr"] = lr * 0.5 * (1 + np.cos(np.pi * step / steps))
        loss = F.cross_entropy(model(xb), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    if out_dir:
        with atomic_folder(out_dir, replace=True) as tmp:  # the metrics of a run read a complete classifier
            atomic_write_tensors(tmp / "classifier.safetensors", model.state_dict())
            atomic_write_json(tmp / "classifier.json", model.args)
    return model


def load_classifier(path: str | Path) -> SmallClassifier:
    path = Path(path)
    for f in ("classifier.json", "classifier.safetensors"):
        if not (path / f).exists():
            raise FileNotFoundError(f"{path / f}: missing; train it with scripts/sample_image.py sample.train_classifier=DIR")
    model = SmallClassifier(**read_json(path / "classifier.json"))
    load_weights(model, path / "classifier.safetensors")
    return model.eval()


@torch.no_grad()
def embed(model: SmallClassifier, x: torch.Tensor, batch: int = 500) -> tuple[np.ndarray, np.ndarray]:
    """-> (features (N, 128), predicted labels (N,))."""
    feats, preds = [], []
    for s in range(0, len(x), batch):
        f = model.features(x[s : s + batch].float())
        feats.append(f.numpy())
        preds.append(model.head(f).argmax(-1).numpy())
    return np.concatenate(feats), np.concatenate(preds)


def small_data_metrics(model: SmallClassifier, gen_x, gen_y, real_x) -> dict[str, float]:
    """Frechet distance and KID (x 1000) between generated and real features; accuracy of the generated labels."""
    fg, pred = embed(model, gen_x.clamp(-1, 1))
    fr, _ = embed(model, real_x)
    return {
        "frechet": frechet_from_features(fg, fr),
        "kid_x1000": 1000 * kid(fg, fr, n_subsets=10, subset_size=min(500, len(fg), len(fr))),
        "accuracy": float((pred == np.asarray(gen_y)).mean()),
    }
