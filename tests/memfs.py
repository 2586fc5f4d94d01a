"""``memfs://``: an in-memory object store registered with Apache Beam's FileSystems, for tests.

It behaves as GCS or S3 do for our purposes: keys, no folders, listing by prefix, rename = copy + delete,
and a plain ``os`` call on a ``memfs://`` path finds nothing. Code that works against it goes through Beam's
FileSystems for remote outputs, as it must on Dataflow. Importing this module registers the scheme (Beam
finds FileSystem subclasses by their ``scheme()``); objects live in ``MemoryFileSystem.objects``.
"""

from __future__ import annotations

import io
import time

from apache_beam.io.filesystem import BeamIOError, CompressedFile, CompressionTypes, FileMetadata, FileSystem


class _Upload(io.BytesIO):
    def __init__(self, store: dict, path: str):
        super().__init__()
        self._store, self._path = store, path

    def close(self):
        if not self.closed:
            self._store[self._path] = (self.getvalue(), time.time())  # visible once the upload completes
        super().close()


class MemoryFileSystem(FileSystem):
    objects: dict = {}  # path -> (bytes, mtime)

    @classmethod
    def scheme(cls):
        return "memfs"

    def join(self, basepath, *paths):
        return "/".join([basepath.rstrip("/"), *(p.strip("/") for p in paths)])

    def split(self, path):
        head, _, tail = path.rstrip("/").rpartition("/")
        return head, tail

    def mkdirs(self, path):
        pass  # no folders in an object store

    def has_dirs(self):
        return False

    def _list(self, dir_or_prefix):
        for path, (data, mtime) in sorted(self.objects.items()):
            if path.startswith(dir_or_prefix):
                yield FileMetadata(path, len(data), mtime)

    def create(self, path, mime_type="application/octet-stream", compression_type=CompressionTypes.AUTO):
        return _Upload(self.objects, path)

    def open(self, path, mime_type="application/octet-stream", compression_type=CompressionTypes.AUTO):
        if path not in self.objects:
            raise BeamIOError("open failed", {path: FileNotFoundError(path)})
        raw = io.BytesIO(self.objects[path][0])
        if compression_type == CompressionTypes.AUTO:
            compression_type = CompressionTypes.detect_compression_type(path)
        if compression_type == CompressionTypes.UNCOMPRESSED:
            return raw
        return CompressedFile(raw, compression_type=compression_type)

    def copy(self, source_file_names, destination_file_names):
        for s, d in zip(source_file_names, destination_file_names):
            self.objects[d] = self.objects[s]

    def rename(self, source_file_names, destination_file_names):
        self.copy(source_file_names, destination_file_names)
        self.delete(source_file_names)

    def exists(self, path):
        return path in self.objects

    def size(self, path):
        return len(self.objects[path][0])

    def last_updated(self, path):
        return self.objects[path][1]

    def checksum(self, path):
        return str(hash(self.objects[path][0]))

    def metadata(self, path):
        return FileMetadata(path, self.size(path), self.last_updated(path))

    def delete(self, paths):
        missing = {p: FileNotFoundError(p) for p in paths if p not in self.objects}
        for p in paths:
            self.objects.pop(p, None)
        if missing:
            raise BeamIOError("delete failed", missing)
