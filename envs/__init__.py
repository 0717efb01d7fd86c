"""Gymnasium environments for the benchmark tasks and their scripted experts.

Every environment follows one contract (see envs/README.md): dict observations keyed as the task's
``shape_meta``, ``info["score"]`` in [0, 1] at every step (a rollout's score is its maximum), reproducible
``reset(seed=...)`` and exact ``reset(options={"reset_to_state": ...})``.
Simulators are imported lazily, so PushT never imports robosuite.
"""

from __future__ import annotations

import importlib

import gymnasium as gym

try:
    # Load triton's LLVM before any simulator pulls in Mesa's OSMesa (llvmpipe, its own LLVM): in the other order,
    # importing torchvision (-> torch._dynamo -> triton) segfaults the process (measured with MUJOCO_GL=osmesa).
    import triton  # noqa: F401
except ImportError:  # CPU-only torch builds ship no triton, and then there is nothing to clash with
    pass

# env name -> "module:class"
ENVS = {
    "pusht": "envs.pusht:PushTEnv",
    "robomimic": "envs.robomimic:RobomimicEnv",
    "block_push": "envs.block_push:BlockPushEnv",
    "kitchen": "envs.kitchen:KitchenEnv",
    "two_paths": "envs.two_paths:TwoPathsEnv",
}

# task name (as in `generate_demos.py task=...`) -> "module:function(out_path, n, seed, **kwargs) -> stats dict"
DEMO_GENERATORS = {
    "pusht": "envs.experts.pusht:generate",
    "lift": "envs.experts.robomimic:generate_lift",
    "can": "envs.experts.robomimic:generate_can",
    "tool_hang": "envs.experts.robomimic:generate_tool_hang",
    "block_push": "envs.experts.block_push:generate",
    "kitchen": "envs.experts.kitchen:generate",
    "two_paths": "envs.experts.two_paths:generate",
}


def _resolve(table: dict[str, str], name: str, what: str):
    if name not in table:
        raise KeyError(f"unknown {what} '{name}'; known: {sorted(table)}")
    module, attr = table[name].split(":")
    return getattr(importlib.import_module(module), attr)


def make_env(name: str, **kwargs) -> gym.Env:
    """Build environment ``name`` (a key of ENVS) with its keyword arguments from the task config."""
    return _resolve(ENVS, name, "environment")(**kwargs)


def demo_generator(task: str):
    return _resolve(DEMO_GENERATORS, task, "demo task")
