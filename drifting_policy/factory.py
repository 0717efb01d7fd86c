"""Objects from configs: the policy a run config names, the environment a task config names, a trained policy
from a checkpoint folder. The trainer, evaluation, the benchmark and the scripts all build through here.

Environments are found through gymnasium's registry (``task.env.id``); this package never imports an environment
module. ``import envs`` registers ours (``drifting_policy/PushT-v0`` ...); a user's package registers its own. A
trusted config (one the user composed) may name ``module:Env-v0``, which gymnasium imports first; a config read from
a checkpoint may not, so that loading a checkpoint never imports code it names.
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path

import gymnasium as gym
from omegaconf import DictConfig, OmegaConf

from drifting_policy.policies import policy_class
from drifting_policy.policies.base import Policy
from drifting_policy.utils.checkpoint import find_last, is_complete, read_config


def _plain(node) -> dict:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)


def build_policy(cfg) -> Policy:
    """The policy named by ``cfg.policy.name`` for ``cfg.task`` (weights random, normaliser unfitted)."""
    cfg = {"policy": _plain(cfg["policy"]), "task": _plain(cfg["task"])}
    return policy_class(cfg["policy"]["name"]).from_config(cfg)


def make_env(task_cfg, trusted: bool = True) -> gym.Env:
    """The task's environment from the gymnasium registry, with ``task.env.kwargs`` and ``max_steps``."""
    env = _plain(task_cfg["env"])
    env_id = env.get("id")
    if not env_id:
        raise KeyError(f"task '{task_cfg['name']}': task.env.id is missing (a gymnasium id such as "
                       "'drifting_policy/PushT-v0')")
    if ":" in env_id and not trusted:
        raise ValueError(f"env id {env_id!r} names a module to import; a checkpoint's config may not (nothing from a "
                         "checkpoint is executed). Import the package that registers the env yourself and use its id")
    try:
        return gym.make(env_id, disable_env_checker=True, max_steps=env["max_steps"], **env.get("kwargs", {}))
    except gym.error.Error as e:
        raise gym.error.Error(f"{e}. Environments are found through gymnasium's registry: `import envs` registers "
                              "this package's tasks, your own package registers yours (or name it as "
                              "'module:Env-v0' in your task config)") from e


def env_factory(task_cfg, trusted: bool = True):
    """A zero-argument constructor of the task's environment."""
    return functools.partial(make_env, task_cfg, trusted)


def env_mode_statistics(task_cfg):
    """The registered env class's ``mode_statistics(final_infos) -> dict`` (multimodal tasks), or None. Taken from
    the class the registry names, never from a config."""
    env_id = str(task_cfg["env"]["id"]).split(":")[-1]
    creator = gym.envs.registration.load_env_creator(gym.spec(env_id).entry_point)
    return getattr(creator, "mode_statistics", None)


def checkpoint_folder(path: str | Path) -> Path:
    """A checkpoint folder, a ``checkpoints/`` folder or a run folder -> the checkpoint folder it means."""
    path = Path(path)
    if is_complete(path):
        return path.resolve()
    for root in (path, path / "checkpoints"):
        found = find_last(root) if root.is_dir() else None
        if found is not None:
            return found
    raise FileNotFoundError(f"no checkpoint at {path}: expected a checkpoint folder (config.yaml, ema.safetensors, "
                            "training_state/) or a run folder with checkpoints/last")


def load_policy(checkpoint: str | Path, task: str | None = None, device: str = "cpu", weights: str = "ema"):
    """(policy with the checkpoint's ``weights`` ("ema" or "model"), its config as a DictConfig) from a training
    checkpoint, a run folder or a folder written by ``Policy.save_pretrained``. ``task`` guards against
    evaluating on the wrong task."""
    folder = Path(checkpoint)
    if not ((folder / "config.yaml").is_file() and (folder / "model.safetensors").is_file()):
        folder = checkpoint_folder(folder)
    cfg = OmegaConf.create(read_config(folder))
    retired = OmegaConf.select(cfg, "task.eval.mode_statistics")
    if retired is not None:  # said, not silently dropped: the checkpoint may expect it to matter
        warnings.warn(f"{folder}/config.yaml sets task.eval.mode_statistics = {retired!r}, a retired key: ignored "
                      "(nothing a checkpoint names is imported; mode statistics come from the registered env class's "
                      "mode_statistics)", stacklevel=2)
    if task is not None and task != cfg.task.name:
        raise ValueError(f"checkpoint {folder} was trained on task '{cfg.task.name}', not '{task}'")
    policy = policy_class(cfg.policy.name).from_pretrained(folder, weights)
    return policy.to(device).eval(), cfg
