"""Writing local files and folders atomically, with the permission bits their neighbours have.

One helper for the whole project's local writes (the pipeline wing adds Beam filesystems on top in
``pipeline/io/shards.py``): a reader never sees half a file or half a folder, because everything is
written under a temporary name beside its target and renamed into place (``os.replace``, atomic on one
filesystem).

Permission bits: a file created with ``open()`` gets ``0666 & ~umask`` (0644 under the usual umask 022),
but some writers create theirs 0600 (safetensors' ``save_file`` does; so does ``tempfile.mkstemp``).
Files written through this module end up with ``0666 & ~umask`` and folders with ``0777 & ~umask``, so a
model folder served by another user (vLLM, TGI, a container) is readable like its neighbours.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import threading
import uuid
from pathlib import Path
from typing import Any, Iterator, Union

PathLike = Union[str, os.PathLike]
_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process's umask, read without changing it where the OS allows (Linux: /proc/self/status)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    with _UMASK_LOCK:  # elsewhere the only way to read it is to set it (briefly) and put it back
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def file_mode() -> int:
    """Mode of a plain file created under the current umask (0644 under umask 022)."""
    return 0o666 & ~current_umask()


def dir_mode() -> int:
    """Mode of a folder created under the current umask (0755 under umask 022)."""
    return 0o777 & ~current_umask()


def make_shareable(path: PathLike) -> None:
    """Give ``path`` (a file, or a folder and everything under it) the modes the umask implies."""
    path = Path(path)
    fmode, dmode = file_mode(), dir_mode()
    if path.is_dir():
        for root, dirs, files in os.walk(path):
            os.chmod(root, dmode)
            for name in files:
                os.chmod(os.path.join(root, name), fmode)
    else:
        os.chmod(path, fmode)


def _temporary_sibling(path: Path, kind: str) -> Path:
    return path.with_name(f".{kind}-{path.name}-{uuid.uuid4().hex[:8]}")  # hidden; never matches a reader's glob


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; write the file there by any means (e.g. ``save_file``).

    On success it gets the umask's mode, is fsynced and renamed to ``path``; on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_sibling(path, "tmp")
    try:
        yield tmp
        os.chmod(tmp, file_mode())
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def write_bytes_atomic(path: PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temporary sibling, fsync, rename), mode from the umask."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)


def write_text_atomic(path: PathLike, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: PathLike, obj: Any, *, indent: int = 2, sort_keys: bool = True,
                      newline: bool = False, **dumps_kwargs: Any) -> None:
    """``json.dumps(obj)`` written atomically (``newline`` adds a final line break)."""
    text = json.dumps(obj, indent=indent, sort_keys=sort_keys, **dumps_kwargs)
    write_text_atomic(path, text + ("\n" if newline else ""))


def replace_dir(tmp_dir: PathLike, final_dir: PathLike) -> None:
    """Move the complete folder ``tmp_dir`` to ``final_dir``; an existing ``final_dir`` is moved aside
    first and deleted after the swap (a reader sees the old folder or the new one, never a mix)."""
    tmp_dir, final_dir = Path(tmp_dir), Path(final_dir)
    if final_dir.exists():
        old = _temporary_sibling(final_dir, "old")
        os.replace(final_dir, old)
        os.replace(tmp_dir, final_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp_dir, final_dir)


@contextlib.contextmanager
def atomic_dir(final_dir: PathLike) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``final_dir``; fill it. On success every file in it gets the
    umask's mode and it replaces ``final_dir`` (see ``replace_dir``); on error it is deleted."""
    final_dir = Path(final_dir)
    final_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_sibling(final_dir, "tmp")
    tmp.mkdir()
    try:
        yield tmp
        make_shareable(tmp)
        replace_dir(tmp, final_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
