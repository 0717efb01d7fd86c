"""Train a drifting (or flow-matching) image generator; torchrun-ready.

  python scripts/train_image.py --config configs/image/fmnist_cpu.yaml [key=value ...]
  torchrun --nproc_per_node=2 scripts/train_image.py --config configs/image/fmnist_cpu.yaml
  python scripts/train_image.py --config configs/image/imagenet_latent_b2.yaml --dry-run
  python scripts/train_image.py --config configs/image/imagenet_latent_b2.yaml --cache-latents IMAGENET --vae SD_VAE
"""

import argparse

import torch

from drifting_policy.image.train import load_config, train


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True)
    ap.add_argument("--dry-run", action="store_true", help="build model + data pipeline on a synthetic folder")
    ap.add_argument("--cache-latents", metavar="IMAGENET_ROOT", help="encode ROOT/train/<wnid>/*.JPEG into data.cache")
    ap.add_argument("--vae", help="local diffusers AutoencoderKL folder (e.g. sd-vae-ft-mse), never downloaded")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave torch's default)")
    ap.add_argument("overrides", nargs="*", help="dotted config overrides, e.g. train.steps=100")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_config(args.config, args.overrides)
    if args.dry_run:
        from drifting_policy.image.dry_run import dry_run

        dry_run(cfg)
    elif args.cache_latents:
        from drifting_policy.image.data import cache_latents

        if not args.vae:
            ap.error("--cache-latents needs --vae LOCAL_DIR")
        out = cache_latents(args.cache_latents, args.vae, cfg.data.cache, size=8 * cfg.data.image_size,
                            device=args.device)
        print(f"latents cached in {out}")
    else:
        train(cfg)


if __name__ == "__main__":
    main()
