"""Config helpers shared by the scripts: the cpu/paper scale switch and generating a missing dataset."""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf


def apply_scale(cfg):
    """Merge ``task.scales[scale]`` onto the root config. ``scale=auto`` means cpu when no GPU is visible."""
    scale = cfg.scale
    if scale == "auto":
        scale = "paper" if torch.cuda.is_available() else "cpu"
    scales = cfg.task.get("scales") or {}
    if scale != "paper" and scale not in scales:
        raise KeyError(f"task '{cfg.task.name}' has no scale '{scale}'; it has paper and {sorted(scales)}")
    merged = OmegaConf.merge(cfg, scales[scale]) if scale != "paper" else cfg
    merged.scale = scale
    return merged


def ensure_dataset(task_cfg) -> Path:
    """Generate the task's demonstrations with its scripted expert if the dataset path does not exist yet.
    Under torchrun only rank 0 generates; the others wait for the file."""
    path = Path(task_cfg.dataset.path)
    if path.exists():
        return path
    gen = task_cfg.dataset.get("generate")
    if not gen:
        raise FileNotFoundError(f"dataset {path} (task.dataset.path) does not exist and the task has no generator")
    if int(os.environ.get("RANK", 0)) != 0:
        while not path.exists():
            time.sleep(5)
        return path
    import envs

    kwargs = OmegaConf.to_container(gen, resolve=True)
    task, n = kwargs.pop("task"), kwargs.pop("n")
    print(f"{path} is missing: generating {n} demonstrations with the scripted '{task}' expert")
    stats = envs.demo_generator(task)(path, n, **kwargs)
    print(f"demonstrations written to {path}: {stats}")
    return path
