"""Write scripted-expert demonstrations in the task's public format.

    python scripts/generate_demos.py task=pusht n=206 [out=data/pusht/pusht_expert.zarr] [seed=0]
"""

import sys
from pathlib import Path

from omegaconf import OmegaConf

import envs

DEFAULT_OUT = {"pusht": "data/pusht/pusht_expert.zarr", "block_push": "data/block_push/block_push_expert.zarr",
               "kitchen": "data/kitchen/kitchen_expert.zarr", "two_paths": "data/two_paths/two_paths_expert.zarr",
               "lift": "data/robomimic/lift/ph/low_dim.hdf5", "can": "data/robomimic/can/ph/low_dim.hdf5",
               "tool_hang": "data/robomimic/tool_hang/ph/low_dim.hdf5"}


def main(argv: list[str]) -> None:
    args = OmegaConf.to_container(OmegaConf.from_dotlist(argv))
    if "task" not in args or "n" not in args:
        sys.exit(f"usage: generate_demos.py task=<{'|'.join(sorted(envs.DEMO_GENERATORS))}> n=<episodes> [out=PATH] "
                 "[seed=0] [other expert options]")
    task, n = args.pop("task"), int(args.pop("n"))
    out = Path(args.pop("out", DEFAULT_OUT.get(task, f"data/{task}/{task}_expert")))
    stats = envs.demo_generator(task)(out, n, **args)
    print(f"wrote {out}: {stats}")


if __name__ == "__main__":
    main(sys.argv[1:])
