"""The few file operations a run needs on its output folder, on local disk or any Beam filesystem.

A pipeline that writes to ``gs://bucket/run`` must behave as one that writes to ``/data/run``: resume
detection, the manifest cross-check, removing stale shards of an earlier run, ``funnel.png``, and reading
shards back (``refinery tokenize``, ``refinery report``). Local paths use ``os``; anything with a scheme
(``gs://``, ``s3://``, ``hdfs://``, ...) goes through Apache Beam's ``FileSystems``, so the same code works
on every object store Beam knows (install ``apache-beam[gcp]`` / ``[aws]`` for those schemes).

Object stores have no folders: ``join`` builds keys with ``/``, and listing is by prefix.
"""

from __future__ import annotations

import glob
import os
from typing import List, Sequence

from pipeline.io.remote import _beam_filesystems


def is_remote(path: str) -> bool:
    """True for paths with a scheme (``gs://...``); they go through Beam's FileSystems."""
    return "://" in path


def join(base: str, *names: str) -> str:
    if is_remote(base):
        return "/".join([base.rstrip("/"), *(n.strip("/") for n in names)])
    return os.path.join(base, *names)


def basename(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1] if is_remote(path) else os.path.basename(path)


def exists(path: str) -> bool:
    if is_remote(path):
        return _beam_filesystems().exists(path)
    return os.path.exists(path)


def read_bytes(path: str) -> bytes:
    """The whole file. Raises FileNotFoundError (naming the path) when it is not there."""
    if not is_remote(path):
        with open(path, "rb") as fh:
            return fh.read()
    from apache_beam.io.filesystem import CompressionTypes

    fs = _beam_filesystems()
    if not fs.exists(path):
        raise FileNotFoundError(f"no such file: {path}")
    with fs.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as fh:
        return fh.read()


def list_files(pattern: str) -> List[str]:
    """Sorted paths matching a glob (``*`` stays inside one path segment); [] when nothing matches."""
    if not is_remote(pattern):
        return sorted(p for p in glob.glob(pattern) if os.path.isfile(p))
    fs = _beam_filesystems()
    results = fs.match([pattern])
    return sorted(m.path for r in results for m in r.metadata_list)


def delete(paths: Sequence[str]) -> None:
    """Remove files (missing ones are not an error)."""
    remote = [p for p in paths if is_remote(p)]
    for p in paths:
        if not is_remote(p):
            try:
                os.remove(p)
            except FileNotFoundError:
                pass
    if remote:
        fs = _beam_filesystems()
        present = [p for p in remote if fs.exists(p)]
        if present:
            fs.delete(present)


def open_arrow_file(path: str):
    """An Arrow IPC file reader: memory-mapped when local; on a Beam filesystem a seekable stream, so reading
    one record batch fetches that batch's bytes, not the whole shard."""
    import pyarrow as pa

    if not is_remote(path):
        return pa.ipc.open_file(pa.memory_map(path, "r"))
    from apache_beam.io.filesystem import CompressionTypes

    fs = _beam_filesystems()
    if not fs.exists(path):
        raise FileNotFoundError(f"no such file: {path}")
    return pa.ipc.open_file(pa.PythonFile(fs.open(path, compression_type=CompressionTypes.UNCOMPRESSED), mode="r"))
