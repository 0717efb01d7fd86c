"""Image data for drifting: Fashion-MNIST (Debian IDX files), sklearn digits, ImageNet folders, cached VAE latents.

A "source" yields batches (x, y) of real samples to feed the queues. In-memory sources draw indices from their
own torch.Generator, whose state goes into checkpoints, so resuming reproduces the stream exactly.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from drifting_policy.utils.io import atomic_folder, atomic_write_json, read_json

FMNIST_DIR = "/usr/share/datasets/fashion-mnist"
IMAGENET_EXT = (".jpeg", ".jpg", ".png")


def read_idx(path: str | Path) -> np.ndarray:
    """An IDX file (optionally gzipped; big-endian header: magic with dtype code and ndim, then the dims)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: IDX file missing (Debian package dataset-fashion-mnist installs them)")
    raw = (gzip.open if path.suffix == ".gz" else open)(path, "rb").read()
    if raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file (magic {raw[:4].hex()}, expected 000008nn)")
    ndim = raw[3]
    dims = np.frombuffer(raw, dtype=">u4", count=ndim, offset=4).astype(int)
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{path}: header says {tuple(dims)} ({int(np.prod(dims))} bytes) but has {data.size}")
    return data.reshape(dims)


def _find(root: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz"):
        if (root / name).exists():
            return root / name
    raise FileNotFoundError(f"{root}: neither {stem} nor {stem}.gz found")


def load_fashion_mnist(split: str = "train", root: str = FMNIST_DIR, pad_to: int = 32):
    """-> x (N, 1, pad_to, pad_to) float in [-1, 1] (zero padding maps to -1, the background), y (N,) long."""
    prefix = {"train": "train", "test": "t10k"}.get(split)
    if prefix is None:
        raise ValueError(f"split must be 'train' or 'test'; got {split!r}")
    images = read_idx(_find(Path(root), f"{prefix}-images-idx3-ubyte"))
    labels = read_idx(_find(Path(root), f"{prefix}-labels-idx1-ubyte"))
    x = torch.from_numpy(images.copy()).float().div(127.5).sub(1.0).unsqueeze(1)
    pad = (pad_to - x.shape[-1]) // 2
    x = F.pad(x, (pad, pad_to - x.shape[-1] - pad, pad, pad_to - x.shape[-1] - pad), value=-1.0)
    return x, torch.from_numpy(labels.copy()).long()


def load_digits_tensor():
    """sklearn digits: x (1797, 1, 8, 8) in [-1, 1], y (1797,)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.from_numpy(d.images).float().div(8.0).sub(1.0).unsqueeze(1)
    return x, torch.from_numpy(d.target).long()


class TensorSource:
    """Random batches from in-memory tensors; the index stream is reproducible from ``state_dict``."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, seed: int = 0):
        if len(x) != len(y):
            raise ValueError(f"x has {len(x)} samples but y has {len(y)}")
        self.x, self.y = x, y
        self.generator = torch.Generator().manual_seed(seed)

    def next(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.randint(0, len(self.x), (n,), generator=self.generator)
        return self.transform(self.x[idx]), self.y[idx]

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        return x.float()

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"source_rng": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.generator.set_state(state["source_rng"])


def scan_imagenet(root: str | Path, split: str = "train") -> tuple[list[str], list[int], list[str]]:
    """``root/<split>/<wnid>/*.JPEG`` -> (paths, labels, sorted wnids); labels index the sorted wnids."""
    base = Path(root) / split
    if not base.is_dir():
        raise FileNotFoundError(f"{base}: expected an ImageNet-style folder with one subfolder per class (wnid)")
    wnids = sorted(d.name for d in base.iterdir() if d.is_dir())
    if not wnids:
        raise ValueError(f"{base}: no class subfolders found")
    paths, labels = [], []
    for i, w in enumerate(wnids):
        files = sorted(f for f in (base / w).iterdir() if f.suffix.lower() in IMAGENET_EXT)
        paths += [str(f) for f in files]
        labels += [i] * len(files)
    if not paths:
        raise ValueError(f"{base}: class folders hold no {IMAGENET_EXT} files")
    return paths, labels, wnids


def load_image(path: str, size: int) -> torch.Tensor:
    """Centre crop to a square (ADM style: downsample by box filter first), resize -> (3, size, size) in [-1, 1]."""
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB")
        while min(im.size) >= 2 * size:
            im = im.resize((im.size[0] // 2, im.size[1] // 2), Image.BOX)
        scale = size / min(im.size)
        im = im.resize((round(im.size[0] * scale), round(im.size[1] * scale)), Image.BICUBIC)
        left, top = (im.size[0] - size) // 2, (im.size[1] - size) // 2
        im = im.crop((left, top, left + size, top + size))
        arr = np.asarray(im, dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div(127.5).sub(1.0)


class ImageFolderDataset(torch.utils.data.Dataset):
    def __init__(self, root: str, size: int = 256, split: str = "train", flip: bool = True):
        self.paths, self.labels, self.wnids = scan_imagenet(root, split)
        self.size, self.flip = size, flip

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        x = load_image(self.paths[i], self.size)
        if self.flip and torch.rand(()) < 0.5:
            x = x.flip(-1)
        return x, self.labels[i]


class LoaderSource:
    """Endless shuffled DataLoader over a folder (pixel-space ImageNet). Resume restarts the shuffle at a seed
    derived from the step: the stream is statistically, not bitwise, the same as an uninterrupted run."""

    def __init__(self, dataset, batch_size: int, workers: int = 8, seed: int = 0, rank: int = 0, world: int = 1):
        self.dataset, self.batch_size, self.workers, self.rank, self.world = dataset, batch_size, workers, rank, world
        self.seed, self.epoch, self._it = seed, 0, None

    def _loader(self):
        sampler = torch.utils.data.DistributedSampler(self.dataset, self.world, self.rank, seed=self.seed)
        sampler.set_epoch(self.epoch)
        return iter(torch.utils.data.DataLoader(self.dataset, self.batch_size, sampler=sampler, drop_last=True,
                                                num_workers=self.workers, persistent_workers=False))

    def next(self, n: int):
        if n != self.batch_size:
            raise ValueError(f"LoaderSource yields batches of {self.batch_size}; asked for {n}")
        while True:
            if self._it is None:
                self._it = self._loader()
            try:
                return next(self._it)
            except StopIteration:
                self.epoch, self._it = self.epoch + 1, None

    def state_dict(self):
        return {"source_epoch": torch.tensor(self.epoch)}

    def load_state_dict(self, state):
        self.epoch, self._it = int(state["source_epoch"]) + 1, None


def cache_latents(root: str, vae_path: str, out_dir: str, size: int = 256, batch_size: int = 32,
                  device: str = "cpu", flip: bool = True, split: str = "train") -> Path:
    """Encode an ImageNet folder with a LOCAL diffusers AutoencoderKL; store the posterior moments.

    Writes ``moments.npy`` (N', 8, h, w) float16 (mean | std), ``labels.npy`` (N',) and ``meta.json``
    (scaling factor, wnids) into ``out_dir`` atomically (a temporary folder renamed at the end). With ``flip``
    each image is stored twice (as is and mirrored), N' = 2N.
    """
    from diffusers import AutoencoderKL
    from tqdm import tqdm

    if not Path(vae_path).is_dir():
        raise FileNotFoundError(f"{vae_path}: expected a local diffusers AutoencoderKL folder (config.json + weights)")
    vae = AutoencoderKL.from_pretrained(vae_path, local_files_only=True).to(device).eval()
    paths, labels, wnids = scan_imagenet(root, split)
    copies = 2 if flip else 1
    down = 2 ** (len(vae.config.block_out_channels) - 1)
    ch = vae.config.latent_channels
    with atomic_folder(out_dir) as tmp:  # refuses an existing cache before hours of encoding, not after
        moments = np.lib.format.open_memmap(tmp / "moments.npy", mode="w+", dtype=np.float16,
                                            shape=(copies * len(paths), 2 * ch, size // down, size // down))
        with torch.no_grad():
            for s in tqdm(range(0, len(paths), batch_size), desc="caching latents"):
                x = torch.stack([load_image(p, size) for p in paths[s : s + batch_size]]).to(device)
                for c in range(copies):
                    dist = vae.encode(x.flip(-1) if c else x).latent_dist
                    m = torch.cat([dist.mean, dist.std], 1).cpu().numpy().astype(np.float16)
                    moments[c * len(paths) + s : c * len(paths) + s + len(x)] = m
        moments.flush()
        del moments
        np.save(tmp / "labels.npy", np.tile(np.asarray(labels, dtype=np.int64), copies))
        atomic_write_json(tmp / "meta.json", {"scaling_factor": float(vae.config.scaling_factor), "wnids": wnids,
                                              "vae_path": str(vae_path), "size": size, "flip": flip,
                                              "latent_channels": ch})
    return Path(out_dir)


class LatentSource(TensorSource):
    """Random latents from a cache: each draw samples the stored posterior and applies the scaling factor."""

    def __init__(self, cache_dir: str, seed: int = 0):
        cache = Path(cache_dir)
        for f in ("moments.npy", "labels.npy", "meta.json"):
            if not (cache / f).exists():
                raise FileNotFoundError(f"{cache / f}: missing; build the cache with scripts/train_image.py "
                                        "cache_latents.root=IMAGENET cache_latents.vae=SD_VAE")
        self.meta = read_json(cache / "meta.json")
        # Memory-mapped: the ImageNet cache is ~40 GB; only the drawn rows are read.
        self.x = np.load(cache / "moments.npy", mmap_mode="r")
        self.y = torch.from_numpy(np.load(cache / "labels.npy"))
        if len(self.x) != len(self.y):
            raise ValueError(f"{cache}: moments.npy has {len(self.x)} rows but labels.npy has {len(self.y)}")
        self.generator = torch.Generator().manual_seed(seed)
        self.scaling = self.meta["scaling_factor"]

    def next(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.randint(0, len(self.x), (n,), generator=self.generator)
        m = torch.from_numpy(np.ascontiguousarray(self.x[idx.numpy()]))
        return self.transform(m), self.y[idx]

    def transform(self, m: torch.Tensor) -> torch.Tensor:
        mean, std = m.float().chunk(2, dim=1)
        return (mean + std * torch.randn(mean.shape, generator=self.generator)) * self.scaling


def build_source(dcfg, seed: int, rank: int = 0, world_size: int = 1):
    kind = dcfg.kind
    if kind == "fmnist":
        return TensorSource(*load_fashion_mnist("train", dcfg.get("root", FMNIST_DIR), dcfg.image_size), seed)
    if kind == "digits":
        return TensorSource(*load_digits_tensor(), seed)
    if kind == "latents":
        return LatentSource(dcfg.cache, seed)
    if kind == "imagenet_pixels":
        ds = ImageFolderDataset(dcfg.root, dcfg.image_size)
        return LoaderSource(ds, dcfg.push_per_step, dcfg.get("workers", 8), seed, rank, world_size)
    raise ValueError(f"data.kind must be fmnist, digits, latents or imagenet_pixels; got {kind!r}")
