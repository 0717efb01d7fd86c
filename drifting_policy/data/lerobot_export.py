"""Write a ReplayBuffer as a LeRobotDataset v3.0 folder (the layout drifting_policy/data/lerobot.py describes).

Store keys become LeRobot feature names: the action key -> "action", (T, H, W, 3) uint8 arrays -> video features
"observation.images.<key>" (AV1 mp4, lerobot's encoding defaults), everything else -> "observation.<key>" as a
vector (trailing axes flattened; a (T,) array is a (1,)-shaped scalar feature). Episodes are never split across
files; a new data (video) file starts once one passes ``data_file_mb`` (``video_file_mb``), 1000 files a chunk, as
lerobot does. Everything is written into a temporary folder beside ``root`` and renamed over it at the end.
"""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from drifting_policy.data.lerobot import BOOKKEEPING, CODEBASE_VERSION
from drifting_policy.data.replay_buffer import ReplayBuffer
from drifting_policy.data.video import DEFAULT_CODEC, DEFAULT_CRF, VideoWriter
from drifting_policy.utils.io import atomic_folder

DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
EPISODES_PATH = "meta/episodes/chunk-000/file-000.parquet"
CHUNKS_SIZE = 1000
QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)
MAX_STAT_FRAMES = 1000  # image statistics from evenly spaced frames, as lerobot samples them


def is_image(arr: np.ndarray) -> bool:
    return arr.ndim == 4 and arr.shape[-1] == 3 and arr.dtype == np.uint8


def default_feature_names(buffer: ReplayBuffer, action_key: str = "action") -> dict[str, str]:
    if action_key not in buffer.data:
        raise KeyError(f"action key '{action_key}' not in the buffer (has {sorted(buffer.data)})")
    return {k: "action" if k == action_key else f"observation.images.{k}" if is_image(v) else f"observation.{k}"
            for k, v in buffer.data.items()}


def _chunk_file(n: int) -> tuple[int, int]:
    return n // CHUNKS_SIZE, n % CHUNKS_SIZE


def _stats(values: np.ndarray, image: bool) -> dict:
    """lerobot's per-feature statistics: images per channel in [0, 1], shaped (3, 1, 1); vectors per dimension."""
    if image:
        step = max(1, len(values) // MAX_STAT_FRAMES)
        x = values[::step].reshape(-1, 3).astype(np.float64) / 255.0
        shape = (3, 1, 1)
    else:
        x = values.reshape(len(values), -1).astype(np.float64)
        shape = x.shape[1:]
    out = {"min": x.min(0), "max": x.max(0), "mean": x.mean(0), "std": x.std(0)}
    out |= {f"q{round(q * 100):02d}": np.quantile(x, q, axis=0) for q in QUANTILES}
    out = {k: v.reshape(shape).tolist() for k, v in out.items()}
    return out | {"count": [int(len(values))]}


def _write_tasks(path: Path, task: str) -> None:
    """task strings as the index of a task_index column, with the pandas metadata lerobot's pandas read needs."""
    table = pa.table({"task_index": pa.array([0], pa.int64()), "__index_level_0__": pa.array([task], pa.string())})
    pandas_meta = {
        "index_columns": ["__index_level_0__"],
        "column_indexes": [{"name": None, "field_name": None, "pandas_type": "unicode", "numpy_type": "object",
                            "metadata": {"encoding": "UTF-8"}}],
        "columns": [{"name": "task_index", "field_name": "task_index", "pandas_type": "int64", "numpy_type": "int64",
                     "metadata": None},
                    {"name": None, "field_name": "__index_level_0__", "pandas_type": "unicode",
                     "numpy_type": "object", "metadata": None}],
        "attributes": {}, "creator": {"library": "pyarrow", "version": pa.__version__}, "pandas_version": "2.2.0",
    }
    pq.write_table(table.replace_schema_metadata({b"pandas": json.dumps(pandas_meta).encode()}), path)


def _column(arr: np.ndarray) -> pa.Array:
    if arr.ndim == 1:
        return pa.array(arr)
    flat = arr.reshape(len(arr), -1)
    return pa.FixedSizeListArray.from_arrays(pa.array(flat.ravel()), flat.shape[1])


def _video_info(path: Path, fps: int) -> dict:
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        return {"video.height": s.height, "video.width": s.width, "video.codec": s.codec_context.codec.canonical_name,
                "video.pix_fmt": s.pix_fmt, "video.is_depth_map": False, "video.fps": fps, "video.channels": 3,
                "has_audio": False}


def export_lerobot(buffer: ReplayBuffer, root: str | Path, fps: int, task: str = "", action_key: str = "action",
                   feature_names: dict[str, str] | None = None, robot_type: str | None = None,
                   codec: str = DEFAULT_CODEC, crf: int = DEFAULT_CRF, data_file_mb: int = 100,
                   video_file_mb: int = 200) -> Path:
    root = Path(root)
    names = feature_names or default_feature_names(buffer, action_key)
    if not buffer.n_episodes:
        raise ValueError("the buffer holds no episodes")
    bad = [n for n in names.values() if "/" in n or n in BOOKKEEPING]
    if bad or len(set(names.values())) != len(names):
        raise ValueError(f"LeRobot feature names must be unique, without '/', and not {BOOKKEEPING}; got {names}")
    video_keys = [k for k in names if is_image(buffer.data[k])]
    frame_keys = [k for k in names if k not in video_keys]
    lengths, ends = buffer.episode_lengths, buffer.episode_ends
    starts = ends - lengths
    with atomic_folder(root, replace=True) as tmp:
        episodes = {"episode_index": np.arange(buffer.n_episodes), "tasks": [[task]] * buffer.n_episodes,
                    "length": lengths, "dataset_from_index": starts, "dataset_to_index": ends}
        frame_index = np.concatenate([np.arange(n) for n in lengths])
        columns = {names[k]: buffer.data[k] for k in frame_keys} | {
            "timestamp": (frame_index / fps).astype(np.float32), "frame_index": frame_index,
            "episode_index": np.repeat(np.arange(buffer.n_episodes), lengths), "index": np.arange(buffer.n_steps),
            "task_index": np.zeros(buffer.n_steps, np.int64)}
        # data files: whole episodes, a new file past data_file_mb
        bytes_per_frame = sum(v.nbytes for v in columns.values()) / buffer.n_steps
        frames_per_file = max(1, int(data_file_mb * 2**20 / bytes_per_frame))
        data_file, n_file, in_file = [], 0, 0
        for length in lengths:
            if in_file and in_file + length > frames_per_file:
                n_file, in_file = n_file + 1, 0
            data_file.append(n_file)
            in_file += length
        data_file = np.asarray(data_file)
        for f in np.unique(data_file):
            rows = slice(int(starts[data_file == f][0]), int(ends[data_file == f][-1]))
            chunk, file = _chunk_file(int(f))
            path = tmp / DATA_PATH.format(chunk_index=chunk, file_index=file)
            path.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(pa.table({k: _column(v[rows]) for k, v in columns.items()}), path, compression="snappy")
        episodes["data/chunk_index"], episodes["data/file_index"] = data_file // CHUNKS_SIZE, data_file % CHUNKS_SIZE

        features = {names[k]: {"dtype": str(buffer.data[k].dtype),
                               "shape": [int(np.prod(buffer.data[k].shape[1:]))] if buffer.data[k].ndim > 1 else [1],
                               "names": None} for k in frame_keys}
        for k in video_keys:
            files = _write_video(tmp, names[k], buffer.data[k], buffer, fps, codec, crf, video_file_mb, episodes)
            h, w = buffer.data[k].shape[1:3]
            features[names[k]] = {"dtype": "video", "shape": [int(h), int(w), 3],
                                  "names": ["height", "width", "channels"], "info": _video_info(files[0], fps)}
        features |= {"timestamp": {"dtype": "float32", "shape": [1], "names": None}} | {
            k: {"dtype": "int64", "shape": [1], "names": None} for k in BOOKKEEPING[1:]}

        (tmp / EPISODES_PATH).parent.mkdir(parents=True, exist_ok=True)
        episodes["meta/episodes/chunk_index"] = episodes["meta/episodes/file_index"] = np.zeros(buffer.n_episodes, int)
        pq.write_table(pa.table({k: pa.array(list(v) if isinstance(v, list) else v) for k, v in episodes.items()}),
                       tmp / EPISODES_PATH)
        _write_tasks(tmp / "meta" / "tasks.parquet", task)
        stats = {names[k]: _stats(buffer.data[k], k in video_keys) for k in names}
        stats |= {k: _stats(columns[k], False) for k in BOOKKEEPING}
        info = {"codebase_version": CODEBASE_VERSION, "robot_type": robot_type, "total_episodes": buffer.n_episodes,
                "total_frames": buffer.n_steps, "total_tasks": 1, "chunks_size": CHUNKS_SIZE,
                "data_files_size_in_mb": data_file_mb, "video_files_size_in_mb": video_file_mb, "fps": fps,
                "splits": {"train": f"0:{buffer.n_episodes}"}, "data_path": DATA_PATH,
                "video_path": VIDEO_PATH if video_keys else None, "features": features}
        (tmp / "meta" / "stats.json").write_text(json.dumps(stats, indent=1))
        (tmp / "meta" / "info.json").write_text(json.dumps(info, indent=4))
    return root


def _write_video(tmp: Path, name: str, frames: np.ndarray, buffer: ReplayBuffer, fps: int, codec: str, crf: int,
                 video_file_mb: int, episodes: dict) -> list[Path]:
    """Episodes back to back in mp4 files, a new file past video_file_mb; fills the episodes' videos/<name>/ columns."""
    h, w = frames.shape[1:3]
    cols = {c: [] for c in ("chunk_index", "file_index", "from_timestamp", "to_timestamp")}
    paths, writer, n_file = [], None, -1
    for e in range(buffer.n_episodes):
        if writer is None or writer.n_bytes >= video_file_mb * 2**20:
            if writer is not None:
                writer.close()
            n_file += 1
            chunk, file = _chunk_file(n_file)
            writer = VideoWriter(tmp / VIDEO_PATH.format(video_key=name, chunk_index=chunk, file_index=file), fps, h, w,
                                 codec, crf)
            paths.append(writer.path)
        start = writer.n_frames / fps
        writer.write(frames[buffer.episode_slice(e)])
        for c, v in zip(cols, (*_chunk_file(n_file), start, writer.n_frames / fps)):
            cols[c].append(v)
    writer.close()
    for c, v in cols.items():
        episodes[f"videos/{name}/{c}"] = np.asarray(v)
    return paths
