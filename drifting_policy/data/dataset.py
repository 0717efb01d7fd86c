"""Training windows for a policy, built from a replay buffer and the task's ``shape_meta``.

Each item is ``{"obs": {key: (To, ...)}, "action": (Tp, Da)}``; rgb observations come out as float (To, 3, H, W) in
[0, 1], low-dim ones as float32 vectors. ``obs_from_store`` says how each shape_meta key is read from the store:
a list of store keys concatenated along the feature axis, each optionally sliced on its last axis ("state[:2]").
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from drifting_policy.data.replay_buffer import ReplayBuffer
from drifting_policy.data.sampler import SequenceSampler, episode_masks
from drifting_policy.data.store_checks import check_finite

_SPEC = re.compile(r"^(?P<key>[\w/.]+)(\[(?P<start>-?\d*):(?P<stop>-?\d*)\])?$")  # dots: LeRobot names


def parse_store_key(spec: str) -> tuple[str, slice]:
    m = _SPEC.match(spec)
    if not m:
        raise ValueError(f"bad store key spec '{spec}': expected 'key' or 'key[a:b]'")
    to_int = lambda s: int(s) if s else None  # noqa: E731
    return m["key"], slice(to_int(m["start"]), to_int(m["stop"]))


def store_keys(dataset_cfg) -> list[str]:
    """The store arrays a task reads: its observations, its actions and its train-init states."""
    keys = {parse_store_key(spec)[0] for specs in dataset_cfg["obs_from_store"].values() for spec in specs}
    keys |= {dataset_cfg.get("action_key", "action")}
    if dataset_cfg.get("init_state_key"):
        keys.add(dataset_cfg["init_state_key"])
    return sorted(keys)


def load_replay_buffer(dataset_cfg, shape_meta=None) -> ReplayBuffer:
    """Read the store named by a task's ``dataset`` config: zarr, robomimic HDF5 (cached as zarr) or a LeRobot v3.0
    folder (``format: lerobot``, or any folder with meta/info.json when no format is given)."""
    from drifting_policy.data.lerobot import is_lerobot_folder, load_lerobot

    path = Path(dataset_cfg["path"])
    fmt = dataset_cfg.get("format") or ("lerobot" if is_lerobot_folder(path) else "zarr")
    if fmt == "zarr":
        return ReplayBuffer.load(path, keys=store_keys(dataset_cfg))
    if fmt == "lerobot":
        return load_lerobot(path, keys=store_keys(dataset_cfg))
    if fmt == "robomimic_hdf5":
        from drifting_policy.data.robomimic_hdf5 import load_robomimic_replay_buffer

        obs_keys = sorted({parse_store_key(s)[0] for specs in dataset_cfg["obs_from_store"].values() for s in specs})
        return load_robomimic_replay_buffer(path, obs_keys=obs_keys, abs_action=dataset_cfg.get("abs_action", True))
    raise ValueError(f"dataset.format must be 'zarr', 'robomimic_hdf5' or 'lerobot'; got '{fmt}'")


def assemble_observations(buffer: ReplayBuffer, shape_meta, obs_from_store, source: str) -> dict[str, np.ndarray]:
    """{shape_meta obs key: (T_total, ...)} checked against shape_meta; errors name ``source``, the key and shapes."""
    out = {}
    for key, meta in shape_meta["obs"].items():
        if key not in obs_from_store:
            raise KeyError(f"{source}: shape_meta obs key '{key}' has no entry in dataset.obs_from_store")
        parts = []
        for spec in obs_from_store[key]:
            store_key, sl = parse_store_key(spec)
            if store_key not in buffer.data:
                raise KeyError(f"{source}: obs key '{key}' needs store key '{store_key}', absent (has {sorted(buffer.data)})")
            arr = buffer.data[store_key]
            if meta.get("type", "low_dim") == "low_dim":
                arr = arr[..., sl].astype(np.float32, copy=False)  # as trained on: float64 1e39 is Inf here
                check_finite(arr, source, store_key, buffer.episode_ends, f" (obs '{key}')")
            parts.append(arr)
        expected = tuple(meta["shape"])
        if meta.get("type", "low_dim") == "rgb":
            arr = parts[0]
            if arr.ndim != 4 or arr.shape[-1] != 3 or (3, *arr.shape[1:3]) != expected:
                raise ValueError(f"{source}: rgb key '{key}' is {arr.shape[1:]} (H, W, 3); shape_meta expects {expected} (3, H, W)")
        else:
            arr = np.concatenate([p.reshape(len(p), -1) for p in parts], axis=-1).astype(np.float32)
            if arr.shape[1:] != expected:
                raise ValueError(f"{source}: obs key '{key}' assembles to shape {arr.shape[1:]}; shape_meta expects {expected}")
        out[key] = arr
    return out


class PolicyDataset(Dataset):
    def __init__(self, buffer: ReplayBuffer, shape_meta, dataset_cfg, n_obs_steps: int, n_action_steps: int,
                 horizon: int, seed: int = 42, split: str = "train"):
        source = str(dataset_cfg.get("path", "<replay buffer>"))
        self.shape_meta, self.n_obs_steps = shape_meta, n_obs_steps
        self.obs = assemble_observations(buffer, shape_meta, dataset_cfg["obs_from_store"], source)
        action_key = dataset_cfg.get("action_key", "action")
        if action_key not in buffer.data:
            raise KeyError(f"{source}: action key '{action_key}' absent (has {sorted(buffer.data)})")
        # checked before anything is fitted to it: one Inf widens the normaliser's range to infinity
        self.action = buffer.data[action_key].astype(np.float32)
        check_finite(self.action, source, action_key, buffer.episode_ends, " (the actions)")
        if self.action.shape[1:] != tuple(shape_meta["action"]["shape"]):
            raise ValueError(f"{source}: '{action_key}' has shape {self.action.shape[1:]}; shape_meta expects "
                             f"{tuple(shape_meta['action']['shape'])}")
        train, val = episode_masks(buffer.n_episodes, dataset_cfg.get("val_ratio", 0.0),
                                   dataset_cfg.get("max_train_episodes"), seed)
        self.episode_mask = {"train": train, "val": val}[split]
        self.sampler = SequenceSampler(buffer.episode_ends, horizon, n_obs_steps - 1, n_action_steps - 1,
                                       self.episode_mask)
        self.rgb_keys = [k for k, m in shape_meta["obs"].items() if m.get("type", "low_dim") == "rgb"]

    def __len__(self) -> int:
        return len(self.sampler)

    def __getitem__(self, i: int) -> dict:
        obs = {}
        for key, arr in self.obs.items():
            window = self.sampler.sample(arr, i, self.n_obs_steps)
            if key in self.rgb_keys:
                window = np.moveaxis(window, -1, 1).astype(np.float32) / 255.0  # (To, 3, H, W)
            obs[key] = torch.from_numpy(np.ascontiguousarray(window))
        return {"obs": obs, "action": torch.from_numpy(self.sampler.sample(self.action, i))}

    def normalizer_data(self) -> dict[str, np.ndarray]:
        """Every low-dim observation and action of the whole store (DP fits its normaliser on all data)."""
        return {k: v for k, v in self.obs.items() if k not in self.rgb_keys} | {"action": self.action}
