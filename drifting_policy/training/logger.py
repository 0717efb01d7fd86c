"""Run logging: JSON lines always (``metrics.jsonl`` in the run folder), wandb when asked (disabled by default;
"offline" keeps everything on disk)."""

from __future__ import annotations

import json
import time
from pathlib import Path


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

    def log(self, metrics: dict, step: int) -> None:
        record = {"step": step, "time": time.time()} | metrics
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self.wandb:
            self.wandb.log(metrics, step=step)

    def truncate_after(self, step: int) -> None:
        """On resume, drop records written after the checkpoint, so the log reads as one uninterrupted run."""
        if self.path.exists():
            lines = [ln for ln in self.path.read_text().splitlines() if ln and json.loads(ln)["step"] <= step]
            self.path.write_text("".join(ln + "\n" for ln in lines))

    def close(self) -> None:
        if self.wandb:
            self.wandb.finish()
