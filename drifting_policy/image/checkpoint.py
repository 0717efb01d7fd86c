"""Checkpoints as folders of safetensors + JSON (no pickles): model, EMA, optimizer, per-rank queue/data state.

``<run>/ckpt/step_<k>/`` holds ``model.safetensors``, ``ema.safetensors``, ``optim.safetensors`` + ``optim.json``
(param-group hyper-parameters), ``rank<r>.safetensors`` (queues and data-stream RNG of each rank) and
``state.json`` (step, config). ``<run>/ckpt/last`` names the newest folder. Every write goes to a temp path first.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file


def _atomic_save(tensors: dict[str, torch.Tensor], path: Path) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp))
    tmp.replace(path)


def _atomic_text(text: str, path: Path) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(text)
    tmp.replace(path)


def optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list[dict]]:
    sd = opt.state_dict()
    tensors = {}
    for idx, st in sd["state"].items():
        for k, v in st.items():
            tensors[f"{idx}.{k}"] = v if torch.is_tensor(v) else torch.tensor(v)
    return tensors, sd["param_groups"]


def load_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], groups: list[dict]) -> None:
    state: dict[int, dict] = {}
    for key, v in tensors.items():
        idx, k = key.split(".", 1)
        state.setdefault(int(idx), {})[k] = v
    opt.load_state_dict({"state": state, "param_groups": groups})


def save_checkpoint(run_dir: str | Path, step: int, model, ema: dict[str, torch.Tensor], opt, rank_state: dict,
                    config: dict, rank: int, world: int) -> Path:
    """Rank 0 writes the shared files; every rank writes its own queue/data state. Call on all ranks."""
    ckdir = Path(run_dir) / "ckpt" / f"step_{step:08d}"
    ckdir.mkdir(parents=True, exist_ok=True)
    _atomic_save(rank_state, ckdir / f"rank{rank}.safetensors")
    if rank == 0:
        _atomic_save(model.state_dict(), ckdir / "model.safetensors")
        _atomic_save(ema, ckdir / "ema.safetensors")
        tensors, groups = optimizer_tensors(opt)
        _atomic_save(tensors, ckdir / "optim.safetensors")
        _atomic_text(json.dumps(groups), ckdir / "optim.json")
        _atomic_text(json.dumps({"step": step, "world_size": world, "config": config}, indent=1),
                     ckdir / "state.json")
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
    if rank == 0:
        _atomic_text(ckdir.name, Path(run_dir) / "ckpt" / "last")
    return ckdir


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    last = Path(run_dir) / "ckpt" / "last"
    return last.parent / last.read_text().strip() if last.exists() else None


def load_checkpoint(ckdir: Path, model, opt, rank: int, world: int) -> tuple[int, dict[str, torch.Tensor], dict]:
    """Restore model and optimizer in place; return (step, EMA tensors, this rank's queue/data state)."""
    state = json.loads((ckdir / "state.json").read_text())
    if state["world_size"] != world:
        raise ValueError(f"{ckdir}/state.json: saved with world_size {state['world_size']}, resuming with {world}; "
                         "exact resume needs the same number of processes (queues are per rank)")
    model.load_state_dict(load_file(str(ckdir / "model.safetensors")))
    load_optimizer(opt, load_file(str(ckdir / "optim.safetensors")), json.loads((ckdir / "optim.json").read_text()))
    return state["step"], load_file(str(ckdir / "ema.safetensors")), load_file(str(ckdir / f"rank{rank}.safetensors"))


def load_weights(ckdir: str | Path, which: str = "ema") -> tuple[dict[str, torch.Tensor], dict]:
    """(weights, config) for sampling: ``which`` is 'ema' or 'model'."""
    ckdir = Path(ckdir)
    if (ckdir / "ckpt" / "last").exists():
        ckdir = latest_checkpoint(ckdir)
    f = ckdir / f"{which}.safetensors"
    if not f.exists():
        raise FileNotFoundError(f"{f}: no {which} weights (expected a run folder or a ckpt/step_* folder)")
    return load_file(str(f)), json.loads((ckdir / "state.json").read_text())["config"]
