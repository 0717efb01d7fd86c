"""The checkpoint folder, one format for policies and image models alike. Nothing is pickled, so loading a
checkpoint never executes code from it.

    <root>/epoch_0050/                  (or step_00001000/; the trainer names it)
        model.safetensors               trained weights (a policy's normaliser included)
        ema.safetensors                 EMA weights (what is evaluated and sampled)
        config.yaml                     the config the run used
        training_state/
            optimizer.safetensors + optimizer.json     AdamW moments and hyper-parameters
            rng.safetensors                            torch's generator state (numpy / python states in state.json)
            rank<r>.safetensors                        per-process tensors (image queues, data streams), if any
            state.json                                 step, epoch, scheduler, scores...: written last
    <root>/last -> epoch_0050

The save sequence (``save_folder``): every file goes into ``<name>.tmp/``, which is renamed to ``<name>`` when
complete, then ``last`` is replaced atomically. A crash at any moment leaves ``last`` naming a complete folder,
or (between the two renames of a re-save) naming nothing, and then ``find_last`` falls back to the newest complete
folder and says so. ``update_state`` rewrites only ``state.json``, atomically, for bookkeeping after a save
(e.g. an evaluation's score). ``remove_folder`` renames a folder to ``<name>.del`` before deleting it, so a crash
never leaves a half-deleted folder under a checkpoint's name, and ``recover`` (run before resuming) finishes what a
killed save or removal left: ``.tmp`` / ``.old`` / ``.del`` folders and stray temporary files go, and a re-save
killed between its two renames gets its previous folder back.
"""

from __future__ import annotations

import os
import random
import shutil
import warnings
from pathlib import Path

import numpy as np
import torch
import yaml

from drifting_policy.utils.io import atomic_write_json, atomic_write_tensors, atomic_write_text, read_json, read_tensors

STATE = "training_state"
UNFINISHED = (".tmp", ".old", ".del")  # suffixes of folders a save or a removal has not finished with


def _barrier(world: int) -> None:
    if world > 1:
        torch.distributed.barrier()


def optimizer_files(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """An optimizer's state as (tensors for safetensors, JSON-able rest)."""
    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for idx, st in sd["state"].items():
        for name, value in st.items():
            (tensors if torch.is_tensor(value) else scalars)[f"{idx}.{name}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def load_optimizer(optimizer: torch.optim.Optimizer, folder: Path) -> None:
    meta = read_json(folder / STATE / "optimizer.json")
    state: dict[int, dict] = {}
    for key, value in list(read_tensors(folder / STATE / "optimizer.safetensors").items()) + list(meta["scalars"].items()):
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def rng_state() -> tuple[dict[str, torch.Tensor], dict]:
    np_state = np.random.get_state()
    py_state = random.getstate()
    return {"torch": torch.get_rng_state()}, {
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }


def set_rng_state(folder: Path, meta: dict) -> None:
    torch.set_rng_state(read_tensors(folder / STATE / "rng.safetensors")["torch"])
    kind, keys, *rest = meta["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), *rest))
    version, internal, gauss = meta["python"]
    random.setstate((version, tuple(internal), gauss))


def _replace_link(link: Path, target_name: str) -> None:
    tmp = link.with_name(link.name + ".tmp")
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    tmp.symlink_to(target_name)
    os.replace(tmp, link)


def save_folder(folder: str | Path, weights: dict[str, dict[str, torch.Tensor]], config: dict, state: dict,
                optimizer: torch.optim.Optimizer | None = None, rank_tensors: dict[str, torch.Tensor] | None = None,
                rank: int = 0, world: int = 1, link_last: bool = True) -> Path:
    """Write one checkpoint folder (see the module docstring). With ``world`` > 1 every rank calls it (each adds
    its ``rank_tensors``); with the default ``world`` = 1 only the calling process writes.

    ``weights``: {"model": state dict, "ema": state dict}; ``state``: JSON-able (the RNG states are added).
    """
    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".tmp")
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        (tmp / STATE).mkdir(parents=True)
    _barrier(world)
    if rank_tensors is not None:
        atomic_write_tensors(tmp / STATE / f"rank{rank}.safetensors", rank_tensors)
    if rank == 0:
        for name, tensors in weights.items():
            atomic_write_tensors(tmp / f"{name}.safetensors", tensors)
        atomic_write_text(tmp / "config.yaml", yaml.safe_dump(config, sort_keys=False))
        if optimizer is not None:
            tensors, meta = optimizer_files(optimizer)
            atomic_write_tensors(tmp / STATE / "optimizer.safetensors", tensors)
            atomic_write_json(tmp / STATE / "optimizer.json", meta, indent=None)
        rng_tensors, rng_meta = rng_state()
        atomic_write_tensors(tmp / STATE / "rng.safetensors", rng_tensors)
        atomic_write_json(tmp / STATE / "state.json", state | {"rng": rng_meta}, indent=None)  # last: complete
    _barrier(world)
    if rank == 0:
        old = folder.with_name(folder.name + ".old")
        if folder.exists():  # a re-save under the same name: keep the old one until the new one is in place
            shutil.rmtree(old, ignore_errors=True)
            os.replace(folder, old)
        os.replace(tmp, folder)
        if link_last:
            _replace_link(folder.parent / "last", folder.name)
        shutil.rmtree(old, ignore_errors=True)
    _barrier(world)
    return folder


def update_state(folder: str | Path, **changes) -> dict:
    """Rewrite ``state.json`` of a saved folder with ``changes`` applied (atomically); returns the new state."""
    path = Path(folder) / STATE / "state.json"
    state = read_json(path) | changes
    atomic_write_json(path, state, indent=None)
    return state


def remove_folder(folder: str | Path) -> None:
    """Delete a checkpoint folder: renamed to ``<name>.del`` first (one atomic step), so a crash during the
    deletion leaves no partial folder that looks like a checkpoint."""
    folder = Path(folder)
    trash = folder.with_name(folder.name + ".del")
    shutil.rmtree(trash, ignore_errors=True)
    os.replace(folder, trash)
    shutil.rmtree(trash)


def recover(root: str | Path) -> list[str]:
    """Finish what a killed ``save_folder`` / ``remove_folder`` / ``update_state`` left in ``root`` (call it from
    one process, before ``find_last``, when resuming). Returns what was done, one line each."""
    root, done = Path(root), []
    last = root / "last"
    if last.is_symlink() and not last.exists():  # killed between the two renames of a re-save of ``last``'s folder
        target = root / os.readlink(last)
        old = target.with_name(target.name + ".old")
        if is_complete(old):
            os.replace(old, target)
            done.append(f"restored {target.name} from {old.name}")
    for path in sorted(root.iterdir()):
        if path.name == "last.tmp" and path.is_symlink():
            path.unlink()
        elif path.is_dir() and not path.is_symlink() and path.name.endswith(UNFINISHED):
            shutil.rmtree(path)
            done.append(f"removed the unfinished {path.name}")
        elif path.is_dir() and not path.is_symlink():  # atomic writes killed before their rename (.<name>.*.tmp)
            for stray in [*path.glob(".*.tmp"), *(path / STATE).glob(".*.tmp")]:
                stray.unlink()
                done.append(f"removed the temporary file {stray.relative_to(root)}")
    return done


def is_complete(folder: Path) -> bool:
    return (folder / STATE / "state.json").is_file() and (folder / "config.yaml").is_file()


def find_last(root: str | Path) -> Path | None:
    """The folder ``<root>/last`` names; if that is missing or incomplete, the complete folder with the highest
    ``global_step`` (or ``step``), with a warning saying so; None when there is no checkpoint at all."""
    root = Path(root)
    last = root / "last"
    if last.is_dir() and is_complete(last):
        return last.resolve()
    candidates = [p for p in root.iterdir() if p.is_dir() and not p.is_symlink()
                  and not p.name.endswith((".tmp", ".del")) and is_complete(p)] if root.is_dir() else []
    if not candidates:
        if last.is_symlink():
            warnings.warn(f"{last} names {os.readlink(last)!r}, which is not a complete checkpoint, and no other "
                          "complete checkpoint exists: starting from scratch", stacklevel=2)
        return None

    def progress(p: Path) -> int:
        s = read_json(p / STATE / "state.json")
        return int(s.get("global_step", s.get("step", -1)))

    best = max(candidates, key=progress)
    if last.is_symlink() or last.exists():
        warnings.warn(f"{last} does not name a complete checkpoint (a crash during a save); resuming from the newest "
                      f"complete one, {best}", stacklevel=2)
    return best.resolve()


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


def read_rank_tensors(folder: str | Path, rank: int) -> dict[str, torch.Tensor]:
    """The ``rank_tensors`` process ``rank`` gave ``save_folder``."""
    return read_tensors(Path(folder) / STATE / f"rank{rank}.safetensors")


def read_state(folder: str | Path) -> dict:
    return read_json(Path(folder) / STATE / "state.json")


def read_config(folder: str | Path) -> dict:
    path = Path(folder) / "config.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (a checkpoint folder holds its config.yaml)")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ValueError(f"{path} is not valid YAML: {e}") from e


def load_weights(module: torch.nn.Module, file: str | Path) -> None:
    """Load a safetensors state dict strictly, naming the file and the mismatching keys on failure."""
    state = read_tensors(file)
    own = module.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    wrong = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
             for k in set(own) & set(state) if state[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        raise ValueError(f"{file} does not match the model: missing {missing[:5]}, unexpected {unexpected[:5]}, "
                         f"shape mismatches {wrong[:5]}")
    module.load_state_dict(state)


def config_differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two plain config dicts (added and removed keys included)."""
    out = []
    for key in sorted(set(old) | set(new)):
        path = f"{prefix}{key}"
        a, b = old.get(key, "<absent>"), new.get(key, "<absent>")
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_differences(a, b, path + ".")
        elif a != b:
            out.append(f"{path}: {a!r} -> {b!r}")
    return out


def check_resumable(folder: str | Path, config: dict, may_change: tuple[str, ...]) -> None:
    """Refuse to resume ``folder`` with a config that differs from its saved one in anything but the dotted
    prefixes ``may_change`` (what does not alter what is trained: evaluation, logging, resume flags...)."""
    saved = {k: v for k, v in read_config(folder).items() if k != "hydra"}
    diffs = [d for d in config_differences(saved, {k: v for k, v in config.items() if k != "hydra"})
             if not d.split(":")[0].startswith(may_change)]
    if diffs:
        raise ValueError(f"resuming {folder}, but the config differs from its config.yaml in what it trains: "
                         f"{diffs[:8]}. Resume with the same settings, or start a new run folder")
