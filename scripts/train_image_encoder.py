"""Train the latent-MAE feature encoder of an image config (its encoder block) into encoder.checkpoint;
torchrun-ready. Configs: configs/image/<name>.yaml.

  python scripts/train_image_encoder.py --config-name fmnist_cpu [key=value ...]     e.g. encoder.steps=100
"""

import sys

import hydra

from drifting_policy.image import cli


@hydra.main(config_path="../configs/image", config_name=None, version_base="1.3")
def main(cfg):
    cli.train_image_encoder(cfg)


if __name__ == "__main__":
    cli.check_arguments(sys.argv[1:], __doc__)
    main()
