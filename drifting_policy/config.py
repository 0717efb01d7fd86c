"""Config helpers for the scripts: the ``scale=auto`` choice and composing a run config outside ``hydra.main``.

Scales are hydra config groups (configs/scale, configs/task_scale, configs/task_scale_policy), so the composed
config is the run's config. ``scale=auto`` is the one choice hydra cannot make (it depends on the machine): the
scripts turn it into ``scale=cpu`` or ``scale=paper`` on their command line before hydra composes.
"""

from __future__ import annotations

from pathlib import Path

import torch

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
SCALES = ("cpu", "paper", "auto")


def auto_scale() -> str:
    return "paper" if torch.cuda.is_available() else "cpu"


def resolve_scale_argument(argv: list[str]) -> list[str]:
    """``argv`` with ``scale=auto`` (or no ``scale=``: auto is the default) replaced by the machine's scale."""
    args = [a for a in argv if not a.startswith("scale=")]
    given = [a.split("=", 1)[1] for a in argv if a.startswith("scale=")]
    scale = given[-1] if given else "auto"
    if scale not in SCALES:
        raise SystemExit(f"scale must be one of {SCALES}; got '{scale}'")
    # beside the other overrides: argparse takes hydra's overrides as one run of positionals between its flags
    at = next((i for i, a in enumerate(args) if "=" in a and not a.startswith("-")), 0)
    return args[:at] + [f"scale={auto_scale() if scale == 'auto' else scale}"] + args[at:]


def compose_run_config(task: str, policy: str = "drifting", scale: str = "paper", overrides: list[str] = ()):
    """The config ``train_policy.py task=... policy=... scale=...`` composes (for tools that run without hydra)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():  # called from inside another script's hydra app
        GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose("train_policy", overrides=[f"task={task}", f"policy={policy}",
                                                  f"scale={auto_scale() if scale == 'auto' else scale}", *overrides])


def invoked_command(script: str) -> str:
    """The command line that ran this hydra app (``python scripts/<script> <overrides>``), for records."""
    import shlex

    from hydra.core.hydra_config import HydraConfig

    return " ".join(["python", f"scripts/{script}", shlex.join(HydraConfig.get().overrides.task)]).strip()
