"""Roll out a saved checkpoint:

    python scripts/eval_policy.py checkpoint=outputs/pusht_state/drifting/seed42 n_episodes=50 seed_start=100000
        [n_videos=2] [out=FOLDER] [task=pusht_state] [sampler=ddim num_inference_steps=10] [device=cpu]
        [sampling_seed=0]   # the policy's sampling noise: the same seeds give the same metrics every time
    python scripts/eval_policy.py checkpoint=random task=pusht_state     # uniform random actions: the floor
"""

import json
import sys

from omegaconf import OmegaConf

from drifting_policy.evaluation.evaluate import evaluate_checkpoint

ALLOWED = {"checkpoint", "n_episodes", "seed_start", "n_videos", "out", "task", "sampler", "num_inference_steps", "device",
           "sampling_seed"}


def main(argv):
    args = OmegaConf.to_container(OmegaConf.from_dotlist(argv))
    unknown = sorted(set(args) - ALLOWED)
    if unknown or "checkpoint" not in args:
        sys.exit(f"unknown option(s) {unknown}; usage: eval_policy.py checkpoint=PATH [{' '.join(sorted(ALLOWED - {'checkpoint'}))}]")
    print(json.dumps(evaluate_checkpoint(**args), indent=1))


if __name__ == "__main__":
    main(sys.argv[1:])
