"""Make a task's dataset ready without training: generate missing demos at the task's own path, convert
robomimic absolute actions into the reader's cache.

    python scripts/prepare_dataset.py task=can_state [scale=cpu]
"""

import sys

import hydra

from drifting_policy.config import resolve_scale_argument
from envs.datasets import prepare_dataset


@hydra.main(config_path="../configs", config_name="train_policy", version_base="1.3")
def main(cfg):
    print(f"{cfg.task.name}: {prepare_dataset(cfg.task)} is ready")


if __name__ == "__main__":
    if not any(a in ("--help", "-h", "--hydra-help") for a in sys.argv[1:]):
        # no run folder for this one: hydra writes nothing (overrides go before hydra's own flags)
        sys.argv = sys.argv[:1] + ["hydra.output_subdir=null", "hydra.run.dir=.", "hydra/job_logging=stdout",
                                   *resolve_scale_argument(sys.argv[1:])]
    main()
