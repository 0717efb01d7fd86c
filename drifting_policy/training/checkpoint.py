"""Checkpoints as folders of safetensors and JSON/YAML: nothing pickled, so loading never executes code.

    <run>/checkpoints/epoch_0050/
        model.safetensors      policy state dict (normaliser included)
        ema.safetensors        EMA policy state dict (what is evaluated)
        config.yaml            the resolved run config
        training_state/        optimizer.safetensors + optimizer.json, scheduler.json, rng.safetensors, state.json
    <run>/checkpoints/last -> epoch_0050

Each folder is written under a temporary name and renamed when complete, and ``last`` is replaced atomically.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file, save_file


def _save_optimizer(optimizer: torch.optim.Optimizer, folder: Path) -> None:
    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for idx, state in sd["state"].items():
        for name, value in state.items():
            if torch.is_tensor(value):
                tensors[f"{idx}.{name}"] = value.contiguous()
            else:
                scalars[f"{idx}.{name}"] = value
    save_file(tensors, folder / "optimizer.safetensors")
    (folder / "optimizer.json").write_text(json.dumps({"param_groups": sd["param_groups"], "scalars": scalars}))


def _load_optimizer(optimizer: torch.optim.Optimizer, folder: Path) -> None:
    meta = json.loads((folder / "optimizer.json").read_text())
    state: dict[int, dict] = {}
    for key, value in list(load_file(folder / "optimizer.safetensors").items()) + list(meta["scalars"].items()):
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def _rng_state() -> tuple[dict, dict]:
    np_state = np.random.get_state()
    return {"torch": torch.get_rng_state()}, {
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
    }


def _set_rng_state(tensors: dict, meta: dict) -> None:
    torch.set_rng_state(tensors["torch"])
    kind, keys, *rest = meta["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), *rest))
    version, internal, gauss = meta["python"]
    random.setstate((version, tuple(internal), gauss))


def save_checkpoint(folder: Path, cfg, policy, ema_policy, optimizer, lr_scheduler, state: dict) -> Path:
    """Write ``folder`` atomically; ``state`` is JSON-able (epoch, global step, EMA step, scores...)."""
    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "training_state").mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in policy.state_dict().items()}, tmp / "model.safetensors")
    save_file({k: v.contiguous() for k, v in ema_policy.state_dict().items()}, tmp / "ema.safetensors")
    OmegaConf.save(cfg, tmp / "config.yaml", resolve=True)
    _save_optimizer(optimizer, tmp / "training_state")
    (tmp / "training_state" / "scheduler.json").write_text(json.dumps(lr_scheduler.state_dict()))
    rng_tensors, rng_meta = _rng_state()
    save_file(rng_tensors, tmp / "training_state" / "rng.safetensors")
    (tmp / "training_state" / "state.json").write_text(json.dumps(state | {"rng": rng_meta}))
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)
    link_tmp = folder.parent / "last.tmp"
    if link_tmp.is_symlink() or link_tmp.exists():
        link_tmp.unlink()
    link_tmp.symlink_to(folder.name)
    os.replace(link_tmp, folder.parent / "last")
    return folder


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint folder, a run folder or a ``checkpoints/`` folder -> the checkpoint folder (``last`` if any)."""
    path = Path(path)
    for candidate in (path, path / "last", path / "checkpoints" / "last"):
        if (candidate / "ema.safetensors").exists() and (candidate / "config.yaml").exists():
            return candidate.resolve()
    raise FileNotFoundError(f"no checkpoint at {path}: expected a folder with ema.safetensors and config.yaml "
                            f"(or a run folder with checkpoints/last)")


def load_weights(module: torch.nn.Module, file: Path) -> None:
    """Load a safetensors state dict strictly, naming the file and the mismatching keys on failure."""
    state = load_file(file)
    own = module.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    wrong = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
             for k in set(own) & set(state) if state[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        raise ValueError(f"{file} does not match the model: missing {missing[:5]}, unexpected {unexpected[:5]}, "
                         f"shape mismatches {wrong[:5]}")
    module.load_state_dict(state)


def load_training_state(folder: Path, policy, ema_policy, optimizer, lr_scheduler) -> dict:
    folder = Path(folder)
    load_weights(policy, folder / "model.safetensors")
    load_weights(ema_policy, folder / "ema.safetensors")
    _load_optimizer(optimizer, folder / "training_state")
    lr_scheduler.load_state_dict(json.loads((folder / "training_state" / "scheduler.json").read_text()))
    state = json.loads((folder / "training_state" / "state.json").read_text())
    _set_rng_state(load_file(folder / "training_state" / "rng.safetensors"), state.pop("rng"))
    return state
