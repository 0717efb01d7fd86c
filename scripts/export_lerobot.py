"""Export demonstrations (a zarr replay buffer, ours or Diffusion Policy's) as a LeRobotDataset v3.0 folder.

    python scripts/export_lerobot.py store=data/pusht/pusht_expert.zarr out=data/pusht/lerobot fps=10 \
        [task="push the T"] [action_key=action] [robot_type=null] [crf=30]

Image arrays become AV1 videos (observation.images.<key>), the action key "action", every other array
observation.<key>; drifting_policy/data/lerobot_export.py says the layout.
"""

import hydra

from drifting_policy.data.lerobot_export import export_lerobot
from drifting_policy.data.replay_buffer import ReplayBuffer


@hydra.main(config_path="../configs/scripts", config_name="export_lerobot", version_base="1.3")
def main(args) -> None:
    buffer = ReplayBuffer.load(args.store)
    options = {k: args[k] for k in ("task", "action_key", "robot_type", "crf") if args[k] is not None}
    out = export_lerobot(buffer, args.out, int(args.fps), **options)
    print(f"wrote {out}: {buffer.n_episodes} episodes, {buffer.n_steps} frames")


if __name__ == "__main__":
    main()
