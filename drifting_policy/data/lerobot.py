"""Read a local LeRobotDataset v3.0 folder into a ReplayBuffer (keys = LeRobot feature names).

    meta/info.json                           codebase_version "v3.0", fps, features {name: dtype, shape, names}
    meta/stats.json, meta/tasks.parquet      normalisation statistics; task strings (index) -> task_index
    meta/episodes/chunk-*/file-*.parquet     per episode: length, dataset_from/to_index, data/{chunk,file}_index,
                                             videos/<key>/{chunk_index, file_index, from_timestamp, to_timestamp}
    data/chunk-*/file-*.parquet              one row per frame: every non-video feature, timestamp, frame_index,
                                             episode_index, index, task_index
    videos/<key>/chunk-*/file-*.mp4          episodes back to back: frame t of an episode is at
                                             from_timestamp + timestamp

Image features come out as (T, H, W, 3) uint8 like our stores, vectors as (T, n) in their stored dtype. Only what
``keys`` names is read (videos are the expensive part). v2.x folders are refused: lerobot converts them to v3.0.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from drifting_policy.data.replay_buffer import ReplayBuffer
from drifting_policy.data.video import decode_frames, frames_at

CODEBASE_VERSION = "v3.0"
BOOKKEEPING = ("timestamp", "frame_index", "episode_index", "index", "task_index")
TOLERANCE_S = 1e-4  # lerobot's default tolerance between a queried timestamp and the decoded frame's


def is_lerobot_folder(path: str | Path) -> bool:
    return (Path(path) / "meta" / "info.json").is_file()


def read_info(root: Path) -> dict:
    path = root / "meta" / "info.json"
    if not path.is_file():
        raise FileNotFoundError(f"{root} is not a LeRobot dataset: no meta/info.json")
    try:
        info = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from e
    version = str(info.get("codebase_version", "<missing>"))
    if version.startswith("v2"):
        raise ValueError(f"{path}: codebase_version {version} is a LeRobot v2.x dataset; this reader reads "
                         f"{CODEBASE_VERSION} (convert it with lerobot's lerobot.datasets.v30.convert_dataset_v21_to_v30)")
    if not version.startswith("v3"):
        raise ValueError(f"{path}: codebase_version is {version}; expected {CODEBASE_VERSION}")
    for key in ("fps", "features", "data_path"):
        if key not in info:
            raise ValueError(f"{path} has no '{key}' (a v3.0 info.json has fps, features, data_path, video_path)")
    return info


def _read_parquet_dir(root: Path, folder: str, columns: list[str] | None = None) -> pa.Table:
    paths = sorted((root / folder).glob("chunk-*/file-*.parquet"))
    if not paths:
        raise FileNotFoundError(f"{root}: no {folder}/chunk-*/file-*.parquet files")
    tables = []
    for p in paths:
        names = pq.read_schema(p).names
        missing = [c for c in (columns or []) if c not in names]
        if missing:
            raise KeyError(f"{p}: column(s) {missing} not found; it has {names}")
        tables.append(pq.read_table(p, columns=columns))
    return pa.concat_tables(tables)


def _column_to_numpy(column: pa.ChunkedArray, feature: dict, name: str, where: str) -> np.ndarray:
    """A parquet column as (N, *shape): lists (fixed or not) flatten to their values, scalars stay scalars."""
    dtype, shape = feature["dtype"], tuple(feature["shape"])
    column = column.combine_chunks()
    if dtype == "image":  # {bytes, path} structs of encoded images (lerobot with use_videos=False)
        import imageio.v3 as iio

        encoded = column.field("bytes").to_pylist()
        return np.stack([iio.imread(io.BytesIO(b)) for b in encoded]).astype(np.uint8)
    n = len(column)
    while pa.types.is_list(column.type) or pa.types.is_fixed_size_list(column.type) or pa.types.is_large_list(column.type):
        column = column.flatten()
    values = column.to_numpy(zero_copy_only=False)
    if values.size != n * int(np.prod(shape)):
        raise ValueError(f"{where}: feature '{name}' holds {values.size} values for {n} frames; info.json says shape "
                         f"{list(shape)}")
    values = values.reshape(n, *shape)
    return values[:, 0] if shape == (1,) else values


def load_lerobot(root: str | Path, keys: list[str] | None = None) -> ReplayBuffer:
    """The episodes of a LeRobot v3.0 folder; ``keys`` limits which features are read (all by default)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"LeRobot dataset folder {root} does not exist")
    info = read_info(root)
    features = {k: v for k, v in info["features"].items() if k not in BOOKKEEPING}
    keys = list(features) if keys is None else list(keys)
    missing = [k for k in keys if k not in features]
    if missing:
        raise KeyError(f"{root}: feature(s) {missing} not in meta/info.json; it has {sorted(features)}")
    video_keys = [k for k in keys if features[k]["dtype"] == "video"]

    ep_cols = ["episode_index", "length", "dataset_from_index", "dataset_to_index"]
    ep_cols += [f"videos/{k}/{c}" for k in video_keys for c in ("chunk_index", "file_index", "from_timestamp")]
    episodes = _read_parquet_dir(root, "meta/episodes", ep_cols).sort_by("episode_index").to_pydict()
    lengths = np.asarray(episodes["length"], dtype=np.int64)
    if not len(lengths):
        raise ValueError(f"{root}: meta/episodes lists no episodes")
    if (lengths <= 0).any():
        e = int(np.argmax(lengths <= 0))
        raise ValueError(f"{root}: meta/episodes gives episode {episodes['episode_index'][e]} length {lengths[e]}; "
                         "every episode needs at least one frame")

    frame_keys = [k for k in keys if k not in video_keys]
    data = _read_parquet_dir(root, "data", [*frame_keys, "episode_index", "index", "timestamp"]).sort_by("index")
    index = data["index"].to_numpy()
    starts = np.asarray(episodes["dataset_from_index"], dtype=np.int64)
    if len(index) != lengths.sum() or not np.array_equal(np.asarray(episodes["dataset_to_index"]) - starts, lengths):
        raise ValueError(f"{root}: data/ holds {len(index)} frames but meta/episodes lists {lengths.sum()} "
                         "(or episode index ranges disagree with their lengths)")
    rows = np.concatenate([np.searchsorted(index, np.arange(s, s + n)) for s, n in zip(starts, lengths)])
    if not np.array_equal(index[rows], np.concatenate([np.arange(s, s + n) for s, n in zip(starts, lengths)])):
        raise ValueError(f"{root}: data/ lacks frames that meta/episodes' dataset_from/to_index point at")
    data = data.take(pa.array(rows))

    out = {k: _column_to_numpy(data[k], features[k], k, f"{root}/data") for k in frame_keys}
    timestamps = data["timestamp"].to_numpy().astype(np.float64)
    bounds = np.concatenate([[0], np.cumsum(lengths)])
    for key in video_keys:
        out[key] = _read_video_feature(root, info, key, features[key], episodes, timestamps, bounds)
    return ReplayBuffer(out, bounds[1:], source=str(root))


def _read_video_feature(root: Path, info: dict, key: str, feature: dict, episodes: dict, timestamps: np.ndarray,
                        bounds: np.ndarray) -> np.ndarray:
    """Each episode's frames, decoded at from_timestamp + timestamp in its file (each file decoded once)."""
    if not info.get("video_path"):
        raise ValueError(f"{root}/meta/info.json: feature '{key}' is a video but video_path is not set")
    files: dict[tuple[int, int], tuple[Path, np.ndarray, np.ndarray]] = {}
    parts = []
    for e in range(len(bounds) - 1):
        chunk, file = int(episodes[f"videos/{key}/chunk_index"][e]), int(episodes[f"videos/{key}/file_index"][e])
        if (chunk, file) not in files:
            path = root / info["video_path"].format(video_key=key, chunk_index=chunk, file_index=file)
            files[(chunk, file)] = (path, *decode_frames(path))
        path, frames, times = files[(chunk, file)]
        query = float(episodes[f"videos/{key}/from_timestamp"][e]) + timestamps[bounds[e]:bounds[e + 1]]
        parts.append(frames_at(path, frames, times, query, TOLERANCE_S))
    video = np.concatenate(parts)
    shape, names = tuple(feature["shape"]), list(feature.get("names") or [])
    hwc = (shape[1], shape[2], shape[0]) if names[:1] == ["channels"] else shape  # some datasets list C first
    if video.shape[1:] != hwc:
        raise ValueError(f"{root}: video '{key}' decodes to frames of {video.shape[1:]}; info.json says {hwc}")
    return video
