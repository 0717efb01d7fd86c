"""Run logging: JSON lines always (``metrics.jsonl`` in the run folder), wandb when asked (disabled by default;
"offline" keeps everything on disk, for ``wandb sync`` later). wandb also gets the rollout videos of evaluation
epochs, as Diffusion Policy logs them."""

from __future__ import annotations

import json
import time
from pathlib import Path

from drifting_policy.utils.io import truncate_jsonl_log


class RunLogger:
    def __init__(self, run_dir: Path, config: dict, wandb_mode: str = "disabled", project: str = "drifting_policy",
                 run_id: str | None = None):
        self.path = Path(run_dir) / "metrics.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.wandb = None
        if wandb_mode != "disabled":
            import wandb

            self.wandb = wandb.init(project=project, mode=wandb_mode, dir=str(run_dir), config=config, id=run_id,
                                    resume="allow")
        self.run_id = self.wandb.id if self.wandb else run_id

    def log(self, metrics: dict, step: int, videos: list[str] = ()) -> None:
        """One record; ``videos`` (mp4 paths, e.g. an evaluation's first episodes) go to wandb as ``test/video_<i>``."""
        record = {"step": step, "time": time.time()} | metrics
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self.wandb:
            import wandb

            media = {f"test/video_{i}": wandb.Video(str(path), format="mp4") for i, path in enumerate(videos)}
            self.wandb.log(metrics | media, step=step)

    def truncate_after(self, step: int, inclusive: bool = True) -> None:
        """On resume, drop records written after the checkpoint (and, with ``inclusive=False``, the checkpoint's
        own step, whose epoch is about to be logged again), so the log reads as one uninterrupted run."""
        truncate_jsonl_log(self.path, (lambda s: s <= step) if inclusive else (lambda s: s < step))

    def close(self) -> None:
        if self.wandb:
            self.wandb.finish()
