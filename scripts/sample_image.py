"""Sample a trained image generator at 1 NFE (drifting) or with Euler steps (flow matching); metrics. The sample
block of the config (configs/image/_common.yaml) says what; the EMA weights of the run's newest checkpoint by default.

  python scripts/sample_image.py --config-name fmnist_cpu sample.cfg_scale=1.5 sample.n_per_class=100
  python scripts/sample_image.py --config-name fmnist_cpu sample.run=RUN_OR_CHECKPOINT sample.weights=model
  python scripts/sample_image.py --config-name fmnist_cpu sample.train_classifier=runs/image/fmnist_classifier
  python scripts/sample_image.py --config-name fmnist_cpu sample.classifier=runs/image/fmnist_classifier  # + metrics
  python scripts/sample_image.py --config-name imagenet_latent_b2 sample.vae=SD_VAE sample.ref_stats=REF.npz
"""

import sys

import hydra

from drifting_policy.image import cli


@hydra.main(config_path="../configs/image", config_name=None, version_base="1.3")
def main(cfg):
    cli.sample_image(cfg)


if __name__ == "__main__":
    cli.check_arguments(sys.argv[1:], __doc__)
    main()
