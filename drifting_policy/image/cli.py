"""What the image scripts do. ``scripts/train_image.py``, ``train_image_encoder.py`` and ``sample_image.py`` are thin
hydra apps over ``configs/image/<name>.yaml`` (``--config-name NAME``, then ``key=value`` overrides); each calls one
function here. The heavy imports sit inside the functions, so that ``--help`` answers without loading torch.
"""

from __future__ import annotations

import json
from pathlib import Path

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs" / "image"
HELP_FLAGS = ("-h", "--help")


def available_configs(config_dir: str | Path = CONFIG_DIR) -> list[str]:
    """The configs ``--config-name`` can name (files starting with ``_`` are shared parts, not configs)."""
    return sorted(p.stem for p in Path(config_dir).glob("*.yaml") if not p.stem.startswith("_"))


def config_listing(config_dir: str | Path = CONFIG_DIR) -> str:
    """One line per config: its name and the first line of its header comment."""
    rows = []
    for name in available_configs(config_dir):
        first = (Path(config_dir) / f"{name}.yaml").read_text().splitlines()[:1]
        rows.append(f"  {name:<28} {first[0].lstrip('# ') if first and first[0].startswith('#') else ''}".rstrip())
    return f"configs (--config-name NAME, from {config_dir}):\n" + "\n".join(rows)


def check_arguments(argv: list[str], doc: str, config_dir: str | Path = CONFIG_DIR) -> None:
    """Before hydra parses ``argv``: ``--help`` prints the script's ``doc`` and the available configs (and, with
    ``--config-name``, hydra goes on to print that config); without ``--config-name`` the script stops, naming them."""
    listing = config_listing(config_dir)
    named = any(a in ("--config-name", "-cn") or a.startswith(("--config-name=", "-cn=")) for a in argv)
    if any(a in HELP_FLAGS for a in argv):
        print(f"{doc.strip()}\n\n{listing}\n")
        if not named:
            raise SystemExit(0)
    elif not named:
        raise SystemExit(f"no config given: add --config-name NAME (--help for more).\n{listing}")


def _device(cfg) -> str:
    from drifting_policy.utils.distributed import wants_cuda

    return "cuda" if wants_cuda(cfg.get("device", "auto")) else "cpu"


def _set_threads(cfg) -> None:
    import torch

    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))


def train_image(cfg) -> None:
    """Train the generator; ``dry_run=true``: check the config on a synthetic folder; ``cache_latents.root=DIR``:
    encode an ImageNet folder into ``data.cache`` with the local VAE ``cache_latents.vae``."""
    _set_threads(cfg)
    cache = cfg.get("cache_latents") or {}
    if cfg.get("dry_run"):
        from drifting_policy.image.dry_run import dry_run

        dry_run(cfg)
    elif cache.get("root"):
        from drifting_policy.image.data import cache_latents

        if not cache.get("vae"):
            raise ValueError("cache_latents.root needs cache_latents.vae=DIR: a local diffusers AutoencoderKL folder "
                             "(e.g. sd-vae-ft-mse; never downloaded)")
        out = cache_latents(cache.root, cache.vae, cfg.data.cache, size=8 * cfg.data.image_size, device=_device(cfg))
        print(f"latents cached in {out}")
    else:
        from drifting_policy.image.train import train
        from drifting_policy.utils.distributed import world

        run = train(cfg)
        if world()[0] == 0:
            print(f"run folder {run}")


def train_image_encoder(cfg) -> None:
    from drifting_policy.image.train_encoder import train_encoder

    _set_threads(cfg)
    if not (cfg.get("encoder") or {}).get("width"):
        raise KeyError("this config has no encoder block with width / blocks / steps to train")
    print(f"encoder written to {train_encoder(cfg)}")


def sample_image(cfg) -> dict:
    """Samples of a trained generator (``sample.run``: a run folder or a checkpoint folder) as ``samples.npz``, a
    grid (one row per class) and ``metrics.json`` in ``sample.out``; or, with ``sample.train_classifier=DIR``, the
    Fashion-MNIST metric classifier."""
    import torch

    from drifting_policy.image import sample as S
    from drifting_policy.utils.io import atomic_write_json, read_json

    _set_threads(cfg)
    sc, device = cfg.sample, _device(cfg)
    if sc.get("train_classifier"):
        from drifting_policy.image.classifier import train_classifier
        from drifting_policy.image.data import load_fashion_mnist

        train_classifier(*load_fashion_mnist("train"), num_classes=10, steps=sc.classifier_steps,
                         out_dir=sc.train_classifier)
        return {}
    model, run_cfg, folder = S.load_generator(sc.run, sc.weights, device)
    print(f"sampling {sc.weights} weights of {folder}")
    labels = S.class_grid_labels(run_cfg.data.num_classes, sc.n_per_class)
    x = S.generate(model, labels, sc.cfg_scale, sc.seed, sc.nfe, device=device)
    if run_cfg.data.kind == "latents":
        if not sc.get("vae"):
            raise ValueError(f"{folder} is a latent model: pass sample.vae=DIR (a local AutoencoderKL) to decode")
        x = S.decode_latents(x, sc.vae, read_json(Path(run_cfg.data.cache) / "meta.json")["scaling_factor"], device)
    images, out = S.to_uint8(x), Path(sc.out)
    S.save_npz(images, labels, out / "samples.npz")
    grid_n = min(sc.n_per_class, 10)
    keep = torch.arange(len(labels)).view(-1, sc.n_per_class)[:, :grid_n].flatten()  # one row per class
    S.save_grid(images[keep[:1000]], out / "grid.png", nrow=grid_n)
    metrics = {"checkpoint": str(folder), "weights": sc.weights, "cfg_scale": sc.cfg_scale, "nfe": sc.nfe,
               "n": len(labels)}
    if sc.get("classifier"):
        from drifting_policy.image.classifier import load_classifier, small_data_metrics
        from drifting_policy.image.evaluate import real_eval_images

        metrics |= small_data_metrics(load_classifier(sc.classifier), x, labels, real_eval_images(run_cfg.data))
    if sc.get("ref_stats"):
        from drifting_policy.image.metrics import fid_against_reference

        metrics["fid"] = fid_against_reference(images, sc.ref_stats, sc.get("inception"), device)
    atomic_write_json(out / "metrics.json", metrics)
    print(json.dumps(metrics))
    return metrics
