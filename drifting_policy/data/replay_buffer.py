"""Episodes stored back to back, in Diffusion Policy's zarr layout.

    <store>/data/<key>          (T_total, ...)  every episode's steps concatenated in time
    <store>/meta/episode_ends   (n_episodes,)   cumulative end index of each episode

We write zarr format 2 by default, as Diffusion Policy's zarr 2.x reads it (format 3 stores are invisible to zarr
2.x); we read both, e.g. the public ``pusht_cchi_v7_replay.zarr``. Data is held in memory as numpy arrays (the benchmark's datasets fit comfortably).

Reading checks what could otherwise pass silently (data/store_checks.py): every chunk file present and whole,
readable metadata, ``episode_ends`` strictly increasing and ending at the data's length. Writing writes every
chunk, also those equal to the fill value, so that a missing chunk always means a lost file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import zarr

from drifting_policy.data.store_checks import check_episode_ends, metadata_error, read_array
from drifting_policy.utils.io import atomic_folder


class ReplayBuffer:
    def __init__(self, data: dict[str, np.ndarray] | None = None, episode_ends: np.ndarray | None = None,
                 source: str = "<replay buffer>"):
        """``source`` (the file the data came from) is named in errors."""
        self.data = dict(data or {})
        lengths = {k: len(v) for k, v in self.data.items()}
        if self.data and len(set(lengths.values())) != 1:
            raise ValueError(f"{source}: every data key must have the same number of steps; got {lengths}")
        n_steps = next(iter(lengths.values())) if self.data else None
        self.episode_ends = check_episode_ends(episode_ends if episode_ends is not None else np.zeros(0, np.int64),
                                               n_steps, source)

    @property
    def n_episodes(self) -> int:
        return len(self.episode_ends)

    @property
    def n_steps(self) -> int:
        return int(self.episode_ends[-1]) if self.n_episodes else 0

    @property
    def episode_lengths(self) -> np.ndarray:
        return np.diff(self.episode_ends, prepend=0)

    def episode_slice(self, i: int) -> slice:
        start = int(self.episode_ends[i - 1]) if i > 0 else 0
        return slice(start, int(self.episode_ends[i]))

    def get_episode(self, i: int) -> dict[str, np.ndarray]:
        s = self.episode_slice(i)
        return {k: v[s] for k, v in self.data.items()}

    def add_episode(self, episode: dict[str, np.ndarray]) -> None:
        """Append one episode: a dict of arrays that share their first (time) dimension."""
        episode = {k: np.asarray(v) for k, v in episode.items()}
        lengths = {k: len(v) for k, v in episode.items()}
        if len(set(lengths.values())) != 1 or 0 in lengths.values():
            raise ValueError(f"an episode needs non-empty arrays of one length; got {lengths}")
        if self.data and set(episode) != set(self.data):
            raise ValueError(f"episode keys {sorted(episode)} differ from the buffer's {sorted(self.data)}")
        for k, v in episode.items():
            self.data[k] = np.concatenate([self.data[k], v]) if k in self.data else v.copy()
        self.episode_ends = np.append(self.episode_ends, self.n_steps + next(iter(lengths.values())))

    def save(self, path: str | Path, zarr_format: int = 2, chunk_steps: int = 1024) -> None:
        """Write the store atomically: into a temporary folder beside ``path``, then rename over it."""
        with atomic_folder(path, replace=True) as tmp:
            root = zarr.open_group(str(tmp), mode="w", zarr_format=zarr_format)
            data = root.create_group("data")
            every_chunk = {"write_empty_chunks": True}  # so a missing chunk file always means a lost one
            for k, v in self.data.items():
                data.create_array(k, data=v, chunks=(min(chunk_steps, max(len(v), 1)), *v.shape[1:]),
                                  config=every_chunk)
            root.create_group("meta").create_array("episode_ends", data=self.episode_ends, config=every_chunk)

    @classmethod
    def load(cls, path: str | Path, keys: list[str] | None = None, allow_missing_chunks: bool = False) -> ReplayBuffer:
        """Read a store (zarr format 2 or 3). ``keys`` limits which ``data/<key>`` arrays are loaded. A missing chunk
        file is an error unless ``allow_missing_chunks`` (then it reads as the fill value, as zarr does)."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"dataset {path} does not exist (generate it with scripts/generate_demos.py)")
        try:
            root = zarr.open_group(str(path), mode="r")
            has = {required: required in root for required in ("data", "meta/episode_ends")}
        except Exception as e:  # zarr raises several types for "not a group" and for broken metadata
            if path.is_dir() and any(path.glob("**/" + name) for name in (".zgroup", "zarr.json")):
                raise metadata_error(path, "", e) from e
            raise ValueError(f"{path} is not a zarr store: {e}") from e
        for required, present in has.items():
            if not present:
                raise ValueError(f"{path} is not a replay buffer: missing '{required}' (expected data/<key> + meta/episode_ends)")
        try:
            available = sorted(root["data"].array_keys())
        except Exception as e:  # noqa: BLE001 (listing reads every member's metadata)
            raise metadata_error(path, "data", e) from e
        keys = available if keys is None else list(keys)
        missing = [k for k in keys if k not in available]
        if missing:
            raise KeyError(f"{path}: data key(s) {missing} not found; the store has {available}")
        local = path if path.is_dir() else None  # chunk files are checked in directory stores
        data = {}
        for name in [f"data/{k}" for k in keys] + ["meta/episode_ends"]:
            try:
                array = root[name]
            except Exception as e:  # noqa: BLE001
                raise metadata_error(path, name, e) from e
            try:
                data[name] = read_array(array, local, allow_missing_chunks)
            except ValueError as e:
                raise ValueError(f"{path}: {e}") from e
        episode_ends = data.pop("meta/episode_ends")
        return cls({k.removeprefix("data/"): v for k, v in data.items()}, episode_ends, source=str(path))
