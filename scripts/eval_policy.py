"""Roll out a saved checkpoint on the test seeds; deterministic given the seeds (the same metrics every time).

    python scripts/eval_policy.py checkpoint=outputs/pusht_state/drifting/seed42 n_episodes=50 seed_start=100000
        [n_videos=2] [out=FOLDER] [task=pusht_state] [sampler=ddim num_inference_steps=10] [device=cpu]
        [sampling_seed=0] [env_module=my_package.envs]
    python scripts/eval_policy.py checkpoint=random task=pusht_state     # uniform random actions: the floor
"""

import importlib
import json

import hydra

import envs  # noqa: F401  (registers the task environments with gymnasium)
from drifting_policy.config import compose_run_config
from drifting_policy.evaluation.evaluate import evaluate_checkpoint, evaluate_random


@hydra.main(config_path="../configs/scripts", config_name="eval_policy", version_base="1.3")
def main(cfg):
    if cfg.env_module:
        importlib.import_module(cfg.env_module)  # typed by the user, never read from a checkpoint
    if cfg.checkpoint == "random":
        if cfg.task is None:
            raise SystemExit("checkpoint=random needs task=<name>")
        out = cfg.out or f"outputs/{cfg.task}/random/eval"
        summary = evaluate_random(compose_run_config(cfg.task, scale=cfg.scale), out, cfg.n_episodes,
                                  cfg.seed_start, cfg.n_videos)
    else:
        summary = evaluate_checkpoint(cfg.checkpoint, cfg.n_episodes, cfg.seed_start, cfg.n_videos, cfg.out, cfg.task,
                                      cfg.sampler, cfg.num_inference_steps, cfg.device, cfg.sampling_seed,
                                      cfg.n_workers)
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
