"""Objects from configs: the policy a run config names, the environment a task config names, a trained policy
from a checkpoint folder. The trainer, evaluation, the benchmark and the scripts all build through here.

Environments are found through gymnasium's registry (``task.env.id``); this package never imports an environment
module. ``import envs`` registers ours (``drifting_policy/PushT-v0`` ...); a user's package registers its own. A
trusted config (one the user composed) may name ``module:Env-v0``, which gymnasium imports first; a config read from
a checkpoint may not, so that loading a checkpoint never imports code it names.
"""

from __future__ import annotations

import functools
import importlib
import warnings
from pathlib import Path

import gymnasium as gym
from omegaconf import DictConfig, OmegaConf

from drifting_policy.policies import policy_class
from drifting_policy.policies.base import Policy
from drifting_policy.utils.checkpoint import checkpoint_folder, read_config


def _plain(node) -> dict:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)


def build_policy(cfg) -> Policy:
    """The policy named by ``cfg.policy.name`` for ``cfg.task`` (weights random, normaliser unfitted)."""
    cfg = {"policy": _plain(cfg["policy"]), "task": _plain(cfg["task"])}
    return policy_class(cfg["policy"]["name"]).from_config(cfg)


def env_spec(task_cfg, trusted: bool = True) -> tuple[gym.envs.registration.EnvSpec, dict]:
    """The registered spec of ``task.env.id`` and the constructor kwargs (``task.env.kwargs`` + ``max_steps``)."""
    env = _plain(task_cfg["env"])
    env_id = env.get("id")
    if not env_id:
        raise KeyError(f"task '{task_cfg['name']}': task.env.id is missing (a gymnasium id such as "
                       "'drifting_policy/PushT-v0')")
    if ":" in env_id and not trusted and env_id.split(":", 1)[1] in gym.registry:
        env_id = env_id.split(":", 1)[1]  # already registered (the user imported its module): nothing to import
    if ":" in env_id:
        if not trusted:
            raise ValueError(f"env id {env_id!r} names a module to import; a checkpoint's config may not (nothing from "
                             "a checkpoint is executed). Import the package that registers the env yourself "
                             "(eval_policy.py env_module=...) and use its id")
        module, env_id = env_id.split(":", 1)
        importlib.import_module(module)  # gymnasium's own "module:Env-v0" convention, from a trusted config
    try:
        spec = gym.spec(env_id)
    except gym.error.Error as e:
        raise gym.error.Error(f"{e}. Environments are found through gymnasium's registry: `import envs` registers "
                              "this package's tasks, your own package registers yours (or name it as "
                              "'module:Env-v0' in your task config)") from e
    return spec, {"max_steps": env["max_steps"], **env.get("kwargs", {})}


def _make_from_spec(spec, kwargs: dict) -> gym.Env:
    # the spec carries its entry point, so a fresh (spawned) worker process needs no registration
    return gym.make(spec, disable_env_checker=True, **kwargs)


def make_env(task_cfg, trusted: bool = True) -> gym.Env:
    """The task's environment from the gymnasium registry, with ``task.env.kwargs`` and ``max_steps``."""
    return _make_from_spec(*env_spec(task_cfg, trusted))


def env_factory(task_cfg, trusted: bool = True):
    """A zero-argument, picklable constructor of the task's environment (for worker processes too)."""
    return functools.partial(_make_from_spec, *env_spec(task_cfg, trusted))


def env_mode_statistics(task_cfg, trusted: bool = True):
    """The registered env class's ``mode_statistics(final_infos) -> dict`` (multimodal tasks), or None. Taken from
    the class the registry names, never from a config."""
    creator = gym.envs.registration.load_env_creator(env_spec(task_cfg, trusted)[0].entry_point)
    return getattr(creator, "mode_statistics", None)


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
