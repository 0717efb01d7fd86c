"""Train a policy: python scripts/train_policy.py task=pusht_state policy=drifting [scale=cpu] [training.resume=true]

Generates the task's demonstrations first if they are missing. Under torchrun the same command trains with DDP.
"""

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from drifting_policy.config import apply_scale, ensure_dataset
from drifting_policy.training.trainer import Trainer


@hydra.main(config_path="../configs", config_name="train_policy", version_base="1.3")
def main(cfg):
    cfg = apply_scale(cfg, HydraConfig.get().overrides.task)
    print(f"task {cfg.task.name}, policy {cfg.policy.name}, scale {cfg.scale}, run folder {cfg.run_dir}")
    ensure_dataset(cfg.task)
    metrics = Trainer(cfg).run()
    print(OmegaConf.to_yaml({k: v for k, v in metrics.items() if k.startswith("test/")}))


if __name__ == "__main__":
    main()
