"""Checks made where demonstrations are read, so that a damaged store fails loudly, naming the file, the array and
what was expected, instead of training on zeros or garbage.

Why each check exists (each was a silent failure):

* a deleted zarr chunk file reads as the array's fill value (zeros): every chunk the array's shape implies must
  exist on disk (our writer writes every chunk, also those equal to the fill value, which zarr 3 skips by default);
* a truncated blosc chunk decodes WITHOUT an error into partly garbage values (blosc trusts the sizes in its
  16-byte header): the header's compressed size must equal the file's size and its decoded size the chunk's size;
* other codecs (zstd, gzip...) raise their own errors, which are re-raised naming the chunk file;
* a broken ``.zarray`` / ``zarr.json`` raises a bare JSONDecodeError: it is re-raised naming the metadata file;
* NaN / Inf actions or low-dim observations end as a NaN loss or, worse, as an infinite normaliser range that maps
  every action to the same value (a useless checkpoint with exit code 0);
* ``episode_ends`` out of order or past the data make windows that cross episodes or index past the end.
"""

from __future__ import annotations

import itertools
import json
import math
import os
from pathlib import Path

import numpy as np

METADATA_FILES = (".zarray", ".zgroup", ".zattrs", ".zmetadata", "zarr.json")
REWRITE_HINT = ("if the store was written by zarr 3 with its default write_empty_chunks=False (chunks equal to the "
                "fill value are then not written), rewrite it once with "
                "`ReplayBuffer.load(path, allow_missing_chunks=True).save(path)`, which writes every chunk")


# ---------------------------------------------------------------------------------------------- episode_ends
def check_episode_ends(episode_ends, n_steps: int | None, source: str, name: str = "meta/episode_ends") -> np.ndarray:
    """``episode_ends`` as int64, after checking it is 1-D, integral, strictly increasing, positive and (when
    ``n_steps`` is given) ends exactly at the data length."""
    ends = np.asarray(episode_ends)
    where = f"{source}: '{name}'"
    if ends.ndim != 1:
        raise ValueError(f"{where} must be 1-D (one cumulative end per episode); it has shape {ends.shape}")
    if ends.size and ends.dtype.kind not in "iu":
        if ends.dtype.kind != "f" or not np.all(np.isfinite(ends)) or not np.array_equal(ends, np.round(ends)):
            raise ValueError(f"{where} must hold integers; it holds {ends.dtype} values such as {ends[:3].tolist()}")
    ends = ends.astype(np.int64)
    if ends.size and ends[0] <= 0:
        raise ValueError(f"{where}[0] is {ends[0]}; the first episode must end after step 0 (ends are positive)")
    steps = np.diff(ends)
    if (steps <= 0).any():
        i = int(np.argmax(steps <= 0)) + 1
        raise ValueError(f"{where} must be strictly increasing (cumulative episode ends); entry {i} is {ends[i]} "
                         f"after {ends[i - 1]}")
    if n_steps is not None:
        last = int(ends[-1]) if ends.size else 0
        if last != n_steps:
            raise ValueError(f"{where} ends at {last}, but the data holds {n_steps} steps; the last episode must end "
                             "exactly at the data's length")
    return ends


# ---------------------------------------------------------------------------------------------- finite values
def check_finite(array: np.ndarray, source: str, name: str, episode_ends=None, what: str = "") -> None:
    """Raise naming ``source``, the array, the episode and the index of the first NaN / Inf in ``array``."""
    if array.dtype.kind not in "fc" or array.size == 0:
        return
    if np.isfinite(array).all():  # the fast path: one vectorised pass, no allocation beyond a bool array
        return
    bad = ~np.isfinite(array.reshape(len(array), -1))
    step = int(np.argmax(bad.any(axis=1)))
    element = int(np.argmax(bad[step]))
    position = f"step {step}"
    if episode_ends is not None and len(episode_ends):
        episode = int(np.searchsorted(np.asarray(episode_ends), step, side="right"))
        start = int(episode_ends[episode - 1]) if episode > 0 else 0
        position = f"episode {episode}, step {step - start} of that episode (step {step} of the store)"
    index = np.unravel_index(element, array.shape[1:]) if array.ndim > 1 else ()
    value = array.reshape(len(array), -1)[step, element]
    raise ValueError(f"{source}: array '{name}'{what} holds {value} at {position}, element {list(map(int, index))} "
                     f"({int(bad.sum())} non-finite values in all). Actions and low-dim observations must be finite: "
                     "fix or drop that episode")


# ---------------------------------------------------------------------------------------------- zarr chunks
def broken_metadata(root: Path) -> tuple[Path, str] | None:
    """(file, problem) for the first zarr metadata file under ``root`` that is not a valid JSON object with the
    fields its kind needs; None when all are."""
    for folder, _, files in sorted(os.walk(root)):
        for name in sorted(f for f in files if f in METADATA_FILES):
            path = Path(folder) / name
            try:
                meta = json.loads(path.read_text())
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
                return path, f"{type(e).__name__}: {e}"
            if not isinstance(meta, dict):
                return path, f"expected a JSON object, got {type(meta).__name__}"
            required = {".zarray": ("shape", "chunks", "dtype")}.get(name, ())
            if name == "zarr.json" and meta.get("node_type") == "array":
                required = ("shape", "data_type", "chunk_grid", "codecs")
            missing = [k for k in required if k not in meta]
            if missing:
                return path, f"missing field(s) {missing}"
    return None


def metadata_error(store: Path, name: str, error: Exception) -> ValueError:
    """A ValueError for a failure to open the group or array ``name`` of ``store``, naming the array and the
    metadata file at fault when one is (zarr itself raises a bare JSONDecodeError)."""
    found = broken_metadata(store)
    if found is None:
        return ValueError(f"{store}: cannot open '{name or '/'}' ({type(error).__name__}: {error})")
    path, problem = found
    node = path.parent.relative_to(store).as_posix()
    node = "the store's root group" if node == "." else f"'{node}'"
    return ValueError(f"{store}: {node} cannot be opened: its metadata file {path} is broken ({problem})")


def _codec_layout(array) -> tuple[bool, bool]:
    """(chunks are blosc frames, the frame's decoded size is the chunk's size) for a zarr 3.x Array."""
    meta = array.metadata
    if meta.zarr_format == 2:
        is_blosc = meta.compressor is not None and meta.compressor.codec_id == "blosc"
        return is_blosc, is_blosc and not meta.filters
    from zarr.codecs import BloscCodec

    codecs = list(meta.codecs)
    return bool(codecs) and isinstance(codecs[-1], BloscCodec), len(codecs) == 2  # [bytes, blosc]


def chunk_files(array, store: Path):
    """(chunk grid coordinates, file) of every chunk (or shard) ``array``'s shape implies, in a local store."""
    outer = array.shards or array.chunks
    grid = [math.ceil(s / c) for s, c in zip(array.shape, outer)]
    folder = store / array.path
    for coords in itertools.product(*map(range, grid)):
        yield coords, folder / array.metadata.encode_chunk_key(coords)


def check_chunks(array, store: Path, allow_missing: bool = False) -> None:
    """Every chunk file present (unless ``allow_missing``) and every blosc chunk as long as its header says."""
    blosc, sized = _codec_layout(array)
    chunk_bytes = math.prod(array.chunks) * array.dtype.itemsize if array.shards is None else None
    missing = []
    for coords, path in chunk_files(array, store):
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            missing.append((coords, path))
            continue
        if blosc:
            with open(path, "rb") as f:
                header = f.read(16)
            problem = None
            if len(header) < 16:
                problem = f"{size} bytes, shorter than blosc's 16-byte header"
            else:
                nbytes, cbytes = int.from_bytes(header[4:8], "little"), int.from_bytes(header[12:16], "little")
                if cbytes != size:
                    problem = f"{size} bytes on disk, but its blosc header says {cbytes}"
                elif sized and chunk_bytes is not None and nbytes != chunk_bytes:
                    problem = f"decodes to {nbytes} bytes, but a {array.chunks} {array.dtype} chunk has {chunk_bytes}"
            if problem:
                raise ValueError(f"array '{array.path}': chunk {coords} ({path}) is truncated or corrupt: {problem}")
    if missing and not allow_missing:
        coords, path = missing[0]
        raise ValueError(f"array '{array.path}': {len(missing)} chunk file(s) missing, first chunk {coords} "
                         f"({path}); a missing chunk would read as the fill value ({array.fill_value}) without an "
                         f"error. Restore the store (a deleted file?); {REWRITE_HINT}")


def read_array(array, store: Path | None, allow_missing_chunks: bool = False) -> np.ndarray:
    """``array[:]`` after ``check_chunks`` (for local stores); a decoding failure names the chunk file at fault."""
    if store is not None:
        check_chunks(array, store, allow_missing_chunks)
    try:
        return array[:]
    except Exception as e:  # noqa: BLE001 (codecs raise RuntimeError, ValueError...: find the chunk, then say which)
        if store is not None:
            for coords, path in chunk_files(array, store):
                try:
                    array.blocks[coords] if array.shards is None else None
                except Exception as chunk_error:  # noqa: BLE001
                    raise ValueError(f"array '{array.path}': chunk {coords} ({path}) cannot be decoded "
                                     f"({type(chunk_error).__name__}: {chunk_error}); the file is truncated or "
                                     "corrupt") from e
        raise ValueError(f"array '{array.path}' cannot be read ({type(e).__name__}: {e})") from e
