"""Train a drifting (or flow-matching) image generator; torchrun-ready. Configs: configs/image/<name>.yaml.

  python scripts/train_image.py --config-name fmnist_cpu [key=value ...]     e.g. train.steps=100 threads=1
  torchrun --nproc_per_node=2 scripts/train_image.py --config-name fmnist_cpu
  python scripts/train_image.py --config-name fmnist_cpu method=flow_matching out_dir=runs/image/fmnist_cpu_fm
  python scripts/train_image.py --config-name imagenet_latent_b2 dry_run=true
  python scripts/train_image.py --config-name imagenet_latent_b2 cache_latents.root=IMAGENET cache_latents.vae=SD_VAE

Checkpoints go to <out_dir>/checkpoints/step_XXXXXXXX/; a run resumes from its newest one (train.resume=true,
the default) with the same number of processes.
"""

import sys

import hydra

from drifting_policy.image import cli


@hydra.main(config_path="../configs/image", config_name=None, version_base="1.3")
def main(cfg):
    cli.train_image(cfg)


if __name__ == "__main__":
    cli.check_arguments(sys.argv[1:], __doc__)
    main()
