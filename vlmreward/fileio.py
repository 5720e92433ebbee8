"""Durable file I/O shared by every writer and reader of the project.

* Writes are atomic: the bytes go to a temporary file beside the target (``.<name>.tmp-<pid>-<n>``), are
  flushed and fsynced, then ``os.replace`` puts them in place. A reader sees the old file or the new one, never
  a torn one; a killed write leaves only a temporary, removed by :func:`remove_temporaries` or by the next write
  of the same target.
* Reads of torch files never execute code: ``torch.load(weights_only=True)`` (tensors, dicts, lists, tuples,
  numbers, strings); anything else is refused with an error naming the file.
"""
from __future__ import annotations

import contextlib
import itertools
import json
import os
from pathlib import Path
from typing import Any, Callable, Iterator

_TMP_MARK = ".tmp-"
_counter = itertools.count()


def _temporary_for(path: Path) -> Path:
    return path.with_name(f".{path.name}{_TMP_MARK}{os.getpid()}-{next(_counter)}")


def remove_temporaries(path) -> list[Path]:
    """Deletes the temporaries that killed atomic writes of ``path`` left behind; ``path`` may also be a
    folder (then the temporaries of every file in it). Returns the removed paths."""
    path = Path(path)
    folder, prefix = (path, ".") if path.is_dir() else (path.parent, f".{path.name}{_TMP_MARK}")
    removed = []
    if folder.is_dir():
        for p in folder.iterdir():
            if p.name.startswith(prefix) and _TMP_MARK in p.name and p.is_file():
                p.unlink(missing_ok=True)
                removed.append(p)
    return removed


@contextlib.contextmanager
def atomic_path(path) -> Iterator[Path]:
    """``with atomic_path(target) as tmp: write(tmp)``: on success ``tmp`` replaces ``target`` atomically; on
    an exception the temporary is removed and ``target`` is untouched. Creates the parent folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_temporaries(path)
    tmp = _temporary_for(path)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:  # the data reaches the disk before the rename makes it visible
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_all(writers: dict) -> None:
    """Atomic write of several files ({path: writer(temp_path)}): every temporary is complete before any of
    them replaces its target (e.g. a model's config and weights); a failure leaves all the old files."""
    with contextlib.ExitStack() as stack:
        temps = {path: stack.enter_context(atomic_path(path)) for path in writers}
        for path, writer in writers.items():
            writer(temps[path])


def write_bytes(path, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path, text: str) -> Path:
    return write_bytes(path, text.encode())


def write_json(path, obj: Any, **kwargs) -> Path:
    """Atomic JSON (indent 2 unless given, trailing newline)."""
    kwargs.setdefault("indent", 2)
    return write_text(path, json.dumps(obj, **kwargs) + "\n")


def write_with(path, writer: Callable[[Path], None]) -> Path:
    """Atomic write through a writer that takes a file path (``torch.save``, ``np.savez``, ``savefig``...)."""
    with atomic_path(path) as tmp:
        writer(tmp)
    return Path(path)


def torch_save(path, obj) -> Path:
    """Atomic ``torch.save``."""
    import torch

    return write_with(path, lambda tmp: torch.save(obj, tmp))


def torch_load(path, *, what: str = "file") -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)``.

    Raises FileNotFoundError (no such file) or ValueError naming the file when it is corrupt, truncated or
    holds anything but tensors and plain containers (e.g. a pickled object whose unpickling would run code).
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # UnpicklingError (refused globals), RuntimeError (torn zip), EOFError...
        raise ValueError(f"cannot read {what} {path}: it is corrupt, truncated, or holds objects other than "
                         f"tensors and plain data, which are never unpickled ({type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''})") from e
