"""Write scripted-expert demonstrations in the task's public format.

    python scripts/generate_demos.py task=pusht n=206 [out=data/pusht/pusht_expert.zarr] [seed=0] \
        [+options.render_images=true]

Tasks: pusht, lift, can, tool_hang, block_push, kitchen, two_paths (envs/__init__.py DEMO_GENERATORS).
"""

from pathlib import Path

import hydra
from omegaconf import OmegaConf

import envs

DEFAULT_OUT = {"pusht": "data/pusht/pusht_expert.zarr", "block_push": "data/block_push/block_push_expert.zarr",
               "kitchen": "data/kitchen/kitchen_expert.zarr", "two_paths": "data/two_paths/two_paths_expert.zarr",
               "lift": "data/robomimic/lift/ph/low_dim.hdf5", "can": "data/robomimic/can/ph/low_dim.hdf5",
               "tool_hang": "data/robomimic/tool_hang/ph/low_dim.hdf5"}


@hydra.main(config_path="../configs/scripts", config_name="generate_demos", version_base="1.3")
def main(args) -> None:
    out = Path(args.out or DEFAULT_OUT.get(args.task, f"data/{args.task}/{args.task}_expert"))
    options = OmegaConf.to_container(args.options, resolve=True)
    stats = envs.demo_generator(args.task)(out, int(args.n), seed=int(args.seed), **options)
    print(f"wrote {out}: {stats}")


if __name__ == "__main__":
    main()
