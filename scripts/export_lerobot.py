"""Export demonstrations (a zarr replay buffer, ours or Diffusion Policy's) as a LeRobotDataset v3.0 folder.

    python scripts/export_lerobot.py store=data/pusht/pusht_expert.zarr out=data/pusht/lerobot fps=10 \
        [task="push the T"] [action_key=action] [robot_type=null] [crf=30]

Image arrays become AV1 videos (observation.images.<key>), the action key "action", every other array
observation.<key>; drifting_policy/data/lerobot_export.py says the layout.
"""

import sys

from omegaconf import OmegaConf

from drifting_policy.data.lerobot_export import export_lerobot
from drifting_policy.data.replay_buffer import ReplayBuffer


def main(argv: list[str]) -> None:
    args = OmegaConf.to_container(OmegaConf.from_dotlist(argv))
    missing = [k for k in ("store", "out", "fps") if k not in args]
    if missing:
        sys.exit(f"missing {missing}; usage: export_lerobot.py store=PATH.zarr out=FOLDER fps=HZ [task=TEXT] "
                 "[action_key=action] [robot_type=NAME] [crf=30]")
    buffer = ReplayBuffer.load(args.pop("store"))
    out = export_lerobot(buffer, args.pop("out"), int(args.pop("fps")), **args)
    print(f"wrote {out}: {buffer.n_episodes} episodes, {buffer.n_steps} frames")


if __name__ == "__main__":
    main(sys.argv[1:])
