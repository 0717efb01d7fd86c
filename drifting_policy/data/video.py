"""mp4 video in and out with PyAV, as LeRobot stores camera streams: one stream per file, episodes back to back.

Frames are stamped at ``pts = index / fps`` in a 1/(fps * 1024) time base (what lerobot's own files carry), so the
frame at time t of a file is found by its timestamp, as LeRobot's readers look it up.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

# lerobot's encoding defaults: AV1 (SVT-AV1, fast preset), a key frame every 2 frames for cheap random access
DEFAULT_CODEC, DEFAULT_CRF, DEFAULT_GOP, SVT_PRESET = "libsvtav1", 30, 2, "12"


class VideoWriter:
    """Append (H, W, 3) uint8 frames to one mp4 stream; ``close`` flushes the encoder."""

    def __init__(self, path: str | Path, fps: int, height: int, width: int, codec: str = DEFAULT_CODEC,
                 crf: int = DEFAULT_CRF, gop: int = DEFAULT_GOP):
        if height % 2 or width % 2:
            raise ValueError(f"{path}: yuv420p video needs even frame sizes; got {height}x{width}")
        options = {"g": str(gop), "crf": str(crf)}
        if codec == "libsvtav1":
            options["preset"] = SVT_PRESET
        self.path, self.n_frames, self.n_bytes = Path(path), 0, 0  # n_bytes: encoded so far (the file lags)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._container = av.open(str(self.path), mode="w")
        self._stream = self._container.add_stream(codec, rate=fps, options=options)
        self._stream.width, self._stream.height, self._stream.pix_fmt = width, height, "yuv420p"
        self._stream.time_base = Fraction(1, fps * 1024)
        self._ticks = 1024  # time-base ticks per frame

    def write(self, frames: np.ndarray) -> None:
        for frame in np.asarray(frames, dtype=np.uint8):
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            vf.pts, vf.time_base = self.n_frames * self._ticks, self._stream.time_base
            packets = self._stream.encode(vf)
            self.n_bytes += sum(p.size for p in packets)
            self._container.mux(packets)
            self.n_frames += 1

    def close(self) -> None:
        self._container.mux(self._stream.encode())  # flush delayed frames
        self._container.close()


def decode_frames(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Every frame of a file's first video stream as (F, H, W, 3) uint8 RGB, and each frame's time in seconds."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"video file {path} does not exist")
    frames, times = [], []
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise ValueError(f"{path} holds no video stream")
        for frame in container.decode(video=0):
            frames.append(frame.to_ndarray(format="rgb24"))
            times.append(float(frame.time))
    if not frames:
        raise ValueError(f"{path}: the video stream decodes to no frames")
    return np.stack(frames), np.asarray(times)


def frames_at(path: Path, frames: np.ndarray, times: np.ndarray, query: np.ndarray, tolerance_s: float) -> np.ndarray:
    """The decoded frames nearest to each query time; ValueError naming the file when one is off by > tolerance."""
    order = np.argsort(times)
    sorted_times = times[order]
    right = np.clip(np.searchsorted(sorted_times, query), 1, len(sorted_times) - 1)
    left = right - 1
    nearest = np.where(np.abs(sorted_times[left] - query) <= np.abs(sorted_times[right] - query), left, right)
    off = np.abs(sorted_times[nearest] - query)
    if len(sorted_times) == 1:
        nearest, off = np.zeros_like(right), np.abs(sorted_times[0] - query)
    if np.any(off > tolerance_s):
        i = int(np.argmax(off))
        raise ValueError(f"{path}: no frame within {tolerance_s} s of t = {query[i]:.6f} s (nearest at "
                         f"{sorted_times[nearest[i]]:.6f} s; the file has {len(times)} frames up to {times.max():.3f} s)")
    return frames[order[nearest]]
