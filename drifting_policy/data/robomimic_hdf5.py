"""Read robomimic HDF5 demonstrations (ours, or the public ph/low_dim_v141.hdf5 and ph/image_v141.hdf5) into a
ReplayBuffer, cached as a zarr store beside the file.

Buffer keys: the requested obs keys (robomimic names: object, robot0_eef_pos, agentview_image, ...), "action"
(7-D delta as stored, or Diffusion Policy's 10-D absolute [world position, rotation-6D, gripper]) and "states"
(flat MuJoCo states, for train-init resets).

Absolute actions follow Diffusion Policy: restore each stored state, hand the delta action to the delta OSC
controller and read the world-frame goal pose it would servo to. Replaying those goals with an absolute controller
reproduces the episode (tests/test_robomimic.py checks the final object pose). That conversion needs the simulator,
so it lives on the envs side (``envs.robomimic.AbsActionConverter``, run by ``envs.datasets.prepare_dataset``), which
also honours the file's own controller configuration (env_args.env_kwargs) or refuses it with one error naming the
settings that differ; this module reads the demos and serves the converted cache.
"""

from __future__ import annotations

import hashlib
import json
from contextlib import contextmanager
from pathlib import Path

import h5py
from tqdm import tqdm

from drifting_policy.data.replay_buffer import ReplayBuffer
from drifting_policy.data.store_checks import check_finite

DELTA_ACTION_DIM = 7  # [dpos 3, axis-angle drot 3, gripper 1]
CACHE_VERSION = 2  # bump when the conversion changes, so old caches are not served (2: the file's own action limits)


@contextmanager
def open_hdf5(path: str | Path):
    """``h5py.File(path, "r")``; a file that is not HDF5 (random bytes, truncated, another format) or that fails
    while being read raises a ValueError naming it instead of h5py's bare OSError."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"robomimic dataset {path} does not exist (generate it with scripts/generate_demos.py)")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise ValueError(f"{path} is not a readable HDF5 file ({e}); it may be truncated, still being copied, or "
                         "not HDF5 at all") from e
    try:
        with f:
            yield f
    except OSError as e:  # h5py raises OSError for unreadable blocks of a damaged file
        raise ValueError(f"{path}: reading failed ({e}); the file may be truncated or corrupt") from e


def read_env_meta(f: h5py.File, path: Path) -> dict:
    if "data" not in f:
        raise ValueError(f"{path}: no 'data' group; expected a robomimic HDF5 with data/demo_i")
    if "env_args" not in f["data"].attrs:
        raise ValueError(f"{path}: 'data' has no 'env_args' attribute (robomimic's env metadata JSON with env_name "
                         "and env_kwargs); cannot tell which task the demos belong to")
    try:
        meta = json.loads(f["data"].attrs["env_args"])
    except (TypeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: data attribute 'env_args' is not valid JSON: {e}") from e
    if "env_name" not in meta:
        raise ValueError(f"{path}: env_args has no 'env_name' (got keys {sorted(meta)})")
    return meta


def demo_names(f: h5py.File) -> list[str]:
    """demo_0, demo_1, ... in numeric order (robomimic files are not guaranteed to be sorted)."""
    return sorted(f["data"].keys(), key=lambda s: int(s.split("_")[-1]) if s.split("_")[-1].isdigit() else s)


def cache_path(path: Path, obs_keys: list[str], abs_action: bool) -> Path:
    """A zarr path keyed on the file's identity (size, mtime, first MiB) and the options."""
    st = path.stat()
    h = hashlib.sha1()
    with open(path, "rb") as fh:
        h.update(fh.read(1 << 20))
    h.update(json.dumps([st.st_size, st.st_mtime_ns, sorted(obs_keys), bool(abs_action), CACHE_VERSION]).encode())
    return path.with_name(f"{path.name}.{'abs' if abs_action else 'delta'}.{h.hexdigest()[:12]}.zarr")


def read_robomimic_hdf5(path: str | Path, obs_keys: list[str], converter=None) -> ReplayBuffer:
    """Read every demo, without the cache. ``converter`` (from the simulator side, e.g.
    ``envs.robomimic.AbsActionConverter``) maps each demo's (states, delta actions) to absolute actions; None keeps
    the stored delta actions. It has ``env_name`` and ``state_dim`` for the checks below."""
    path = Path(path)
    with open_hdf5(path) as f:
        meta = read_env_meta(f, path)
        env_name = converter.env_name if converter is not None else meta["env_name"]
        names = demo_names(f)
        if not names:
            raise ValueError(f"{path}: 'data' holds no demos")
        state_dim = converter.state_dim if converter is not None else None
        buffer = ReplayBuffer()
        for name in tqdm(names, desc=f"read {path.name}", disable=len(names) < 20):
            demo = f["data"][name]
            where = f"{path}: data/{name}"
            for key in ("actions", "states"):
                if key not in demo:
                    raise KeyError(f"{where} has no '{key}' dataset")
            obs_group = demo["obs"] if "obs" in demo else {}
            missing = [k for k in obs_keys if k not in obs_group]
            if missing:
                raise KeyError(f"{where}/obs lacks key(s) {missing}; it has {sorted(obs_group)}")
            lengths = {key: len(demo[key]) for key in ("actions", "states")} | {
                f"obs/{k}": len(obs_group[k]) for k in obs_keys}
            if "num_samples" in demo.attrs:  # robomimic's own count of the demo's steps
                lengths["num_samples attribute"] = int(demo.attrs["num_samples"])
            if len(set(lengths.values())) != 1 or 0 in lengths.values():
                raise ValueError(f"{where}: its arrays must have one entry per step, the same non-zero number; "
                                 f"got lengths {lengths}")
            actions = demo["actions"][:]
            if actions.ndim != 2 or actions.shape[1] != DELTA_ACTION_DIM:
                raise ValueError(f"{where}/actions has shape {actions.shape}, but {env_name} demos store "
                                 f"{DELTA_ACTION_DIM}-D delta actions [dpos 3, drot 3, gripper 1]")
            states = demo["states"][:]
            if state_dim is not None and states.shape[1] != state_dim:
                raise ValueError(f"{where}/states are {states.shape[1]}-D but robosuite 1.5.2's {env_name} has a "
                                 f"{state_dim}-D flat MuJoCo state")
            episode = {k: obs_group[k][:] for k in obs_keys}
            for name, values in [("actions", actions), ("states", states)] + [(f"obs/{k}", v) for k, v in episode.items()]:
                check_finite(values, where, name)  # before the conversion replays them through the simulator
            episode["action"] = converter(states, actions) if converter is not None else actions
            episode["states"] = states
            buffer.add_episode(episode)
    return buffer


def load_robomimic_replay_buffer(path: str | Path, obs_keys: list[str], abs_action: bool = True,
                                 use_cache: bool = True) -> ReplayBuffer:
    """The ReplayBuffer of a robomimic HDF5. Delta actions are read as stored (cached when ``use_cache``); absolute
    actions come from the zarr cache that the simulator-side conversion writes (``envs.datasets.prepare_dataset``,
    which ``scripts/train_policy.py`` runs before training)."""
    path = Path(path)
    with open_hdf5(path) as f:  # an HDF5 file at all? (before hashing it or pointing at its conversion)
        read_env_meta(f, path)
    obs_keys = list(obs_keys)
    cache = cache_path(path, obs_keys, abs_action)
    if use_cache and cache.exists():
        return ReplayBuffer.load(cache)
    if abs_action:
        raise FileNotFoundError(f"{path}: its absolute actions are not converted yet ({cache} is missing). The "
                                "conversion replays the demos through robosuite: `python scripts/prepare_dataset.py "
                                "task=<task>` (scripts/train_policy.py runs it itself), or "
                                "`envs.datasets.write_abs_action_cache(path, obs_keys)` from Python")
    buffer = read_robomimic_hdf5(path, obs_keys)
    if use_cache:
        buffer.save(cache)
    return buffer
