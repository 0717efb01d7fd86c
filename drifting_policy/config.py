"""Config helpers shared by the scripts: the cpu/paper scale switch and generating a missing dataset."""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

GROUPS = ("task", "policy")  # config groups: selecting one is not a value override


def apply_scale(cfg, cli_overrides=()):
    """Layer the task's settings over the generic defaults, then the command line over everything.

    Order: train_policy.yaml + policy/*.yaml, then ``task.overrides`` (the task's paper settings for root keys such
    as training.batch_size), then ``task.scales[scale]`` (``scale=auto``: cpu when no GPU is visible), then
    ``task.policy_overrides[<policy name>]`` (settings that only one head takes, e.g. drifting's n_samples), then
    ``task.scales[scale].policy_overrides[<policy name>]`` (one head's settings at that scale only), then
    the command-line ``key=value`` overrides again, so what the user typed always wins.
    """
    scale = cfg.scale
    if scale == "auto":
        scale = "paper" if torch.cuda.is_available() else "cpu"
    scales = cfg.task.get("scales") or {}
    if scale != "paper" and scale not in scales:
        raise KeyError(f"task '{cfg.task.name}' has no scale '{scale}'; it has paper and {sorted(scales)}")
    per_policy = (cfg.task.get("policy_overrides") or {}).get(cfg.policy.name) or {}
    scale_layer = OmegaConf.create(scales[scale] if scale != "paper" else {})
    # a scale may carry its own per-policy settings (e.g. the baseline's epochs at cpu scale)
    scale_per_policy = (scale_layer.pop("policy_overrides", None) or {}).get(cfg.policy.name) or {}
    layers = [cfg.task.get("overrides") or {}, scale_layer, per_policy, scale_per_policy]
    typed = [o for o in cli_overrides if "=" in o and o.split("=")[0].lstrip("+") not in GROUPS
             and not o.startswith(("hydra.", "~"))]
    OmegaConf.set_struct(cfg, False)  # a task's layers may add keys of its own (e.g. expert options)
    merged = OmegaConf.merge(cfg, *layers, OmegaConf.from_dotlist([o.lstrip("+") for o in typed]))
    merged.scale = scale
    OmegaConf.set_struct(merged, True)
    return merged


CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


def compose_run_config(task: str, policy: str = "drifting", scale: str = "paper"):
    """The config train_policy.py would build for ``task=... policy=... scale=...`` (for tools that run without hydra)."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train_policy", overrides=[f"task={task}", f"policy={policy}", f"scale={scale}"])
    return apply_scale(cfg)


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
