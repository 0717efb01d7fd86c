"""Train a policy: python scripts/train_policy.py task=pusht_state policy=drifting [scale=auto|cpu|paper]
[seed=43] [training.resume=true] [--cfg job] [--help]

scale=auto (the default) is cpu without a GPU and paper with one. Generates the task's demonstrations first if
they are missing. Under torchrun the same command trains with DDP.
"""

import sys

import hydra
from omegaconf import OmegaConf

import envs  # noqa: F401  (registers the task environments with gymnasium)
from drifting_policy.config import resolve_scale_argument
from drifting_policy.training.trainer import Trainer
from envs.datasets import prepare_dataset


@hydra.main(config_path="../configs", config_name="train_policy", version_base="1.3")
def main(cfg):
    print(f"task {cfg.task.name}, policy {cfg.policy.name}, scale {cfg.scale}, run folder {cfg.run_dir}")
    prepare_dataset(cfg.task)
    metrics = Trainer(cfg).run()
    print(OmegaConf.to_yaml({k: v for k, v in metrics.items() if k.startswith("test/")}))


if __name__ == "__main__":
    if not any(a in ("--help", "-h", "--hydra-help") for a in sys.argv[1:]):
        sys.argv = sys.argv[:1] + resolve_scale_argument(sys.argv[1:])
    main()
