"""Train the latent-MAE feature encoder of an image config (its `encoder` block); torchrun-ready.

  python scripts/train_image_encoder.py --config configs/image/fmnist_cpu.yaml [key=value ...]
"""

import argparse

import torch

from drifting_policy.image.train import load_config
from drifting_policy.image.train_encoder import train_encoder


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave torch's default)")
    ap.add_argument("overrides", nargs="*", help="dotted config overrides, e.g. encoder.steps=100")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_config(args.config, args.overrides)
    if "encoder" not in cfg or not cfg.encoder.get("width"):
        raise KeyError(f"{args.config}: no encoder block with width/blocks/steps to train")
    print(f"encoder written to {train_encoder(cfg)}")


if __name__ == "__main__":
    main()
