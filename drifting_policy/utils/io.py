"""Atomic writes: every file (or folder of files) is written under a temporary name beside its destination and
renamed into place, so a crash leaves either the old one or the new one, never half of one."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` and rename the result onto ``path`` (parent folders are created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        with open(tmp, "rb") as f:  # on disk before the rename makes it visible
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


@contextlib.contextmanager
def atomic_folder(path: str | Path, replace: bool = False) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``path`` to fill; when the block ends without an error it becomes
    ``path``, and on an error it is removed. An existing ``path`` is refused (checked before and after the block,
    so a long job fails at once) unless ``replace``, which swaps it out only once the new folder is complete."""
    path = Path(path)
    if path.exists() and not replace:
        raise FileExistsError(f"{path} already exists; remove it to rebuild")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            if not replace:
                raise FileExistsError(f"{path} appeared while it was being written; the new copy is discarded")
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            os.replace(path, old / path.name)  # a folder cannot be renamed onto a non-empty one: move it aside
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def atomic_write_json(path: str | Path, obj, indent: int | None = 1) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=indent))


def atomic_write_tensors(path: str | Path, tensors: dict) -> Path:
    """A safetensors file of CPU-contiguous copies of ``tensors``."""
    from safetensors.torch import save_file

    cpu = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    return atomic_write(path, lambda tmp: save_file(cpu, str(tmp)))


def read_tensors(path: str | Path) -> dict:
    """A safetensors file as a dict of tensors; a missing, truncated or foreign file raises naming the file."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (expected a safetensors file)")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise ValueError(f"{path} is not a readable safetensors file ({type(e).__name__}: {e}); "
                         "it may be truncated or from another program") from e


def read_json(path: str | Path):
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (expected JSON)")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from e


def truncate_jsonl_log(path: str | Path, keep) -> None:
    """Rewrite a JSON-lines log (records with a "step") with only the records whose step passes ``keep``, atomically:
    a resumed run logs the steps after its checkpoint again. Appends are not atomic, so a kill can cut the last line:
    it is dropped with a warning; a damaged line elsewhere raises naming the file and the line."""
    import warnings

    path = Path(path)
    if not path.is_file():
        return
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    rows = []
    for i, line in enumerate(lines):
        try:
            rows.append((line, json.loads(line)["step"]))
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            if i < len(lines) - 1:
                raise ValueError(f"{path}: line {i + 1} is not a log record ({e}): {line[:80]!r}") from e
            warnings.warn(f"{path}: dropping its last line, cut short by the interruption: {line[:80]!r}",
                          stacklevel=3)
    atomic_write_text(path, "".join(ln + "\n" for ln, step in rows if keep(step)))
