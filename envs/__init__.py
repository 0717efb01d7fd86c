"""Gymnasium environments for the benchmark tasks and their scripted experts.

Every environment follows one contract (see envs/README.md): dict observations keyed as the task's
``shape_meta``, ``info["score"]`` in [0, 1] at every step (a rollout's score is its maximum), reproducible
``reset(seed=...)`` and exact ``reset(options={"reset_to_state": ...})``. A multimodal task's env class has a
``mode_statistics(final_infos) -> dict`` static method; evaluation finds it through the registry.

Importing this package registers every task's env with gymnasium (``gymnasium.make("drifting_policy/PushT-v0")``);
the simulators themselves are imported lazily, so PushT never imports robosuite.
"""

from __future__ import annotations

import importlib

from envs.rendering import choose_gl_backend

# Before any simulator import (MuJoCo and PyOpenGL read their backend once, when first imported), and before triton
# meets Mesa's OSMesa: envs/rendering.py holds both choices and why.
choose_gl_backend()

import gymnasium as gym  # noqa: E402

NAMESPACE = "drifting_policy"
# gymnasium id (without the namespace) -> (entry point, fixed constructor kwargs)
ENV_IDS = {
    "PushT-v0": ("envs.pusht:PushTEnv", {}),
    "Lift-v0": ("envs.robomimic:RobomimicEnv", {"env_name": "Lift"}),
    "Can-v0": ("envs.robomimic:RobomimicEnv", {"env_name": "PickPlaceCan"}),
    "ToolHang-v0": ("envs.robomimic:RobomimicEnv", {"env_name": "ToolHang"}),
    "BlockPush-v0": ("envs.block_push:BlockPushEnv", {}),
    "Kitchen-v0": ("envs.kitchen:KitchenEnv", {}),
    "TwoPaths-v0": ("envs.two_paths:TwoPathsEnv", {}),
}
for _name, (_entry, _kwargs) in ENV_IDS.items():
    if f"{NAMESPACE}/{_name}" not in gym.registry:
        # our envs count their own steps (max_steps) and pass gymnasium's check_env (tests); no extra wrappers
        gym.register(f"{NAMESPACE}/{_name}", entry_point=_entry, kwargs=_kwargs, disable_env_checker=True,
                     order_enforce=False)

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


def make_env(env_id: str, **kwargs) -> gym.Env:
    """``gymnasium.make`` of one of our ids, with or without the namespace (``"PushT-v0"``)."""
    full = env_id if "/" in env_id else f"{NAMESPACE}/{env_id}"
    return gym.make(full, **kwargs)


def demo_generator(task: str):
    if task not in DEMO_GENERATORS:
        raise KeyError(f"unknown demo task '{task}'; known: {sorted(DEMO_GENERATORS)}")
    module, attr = DEMO_GENERATORS[task].split(":")
    return getattr(importlib.import_module(module), attr)
