"""The corridor between the two wings: the file formats that ``pipeline`` writes and ``model`` reads.

``model`` never imports ``pipeline``, and the trainer runs on machines without Beam, so the *description* of
the files the wings share lives here, once, on the reading side: ``model/corridor/`` imports only the standard
library, NumPy and pyarrow (never torch, never Beam). It is the one part of ``model`` that the pipeline wing
imports outside its command-line front door: the writer conforms to the format its reader owns. (It sat in a
top-level ``corridor/`` package for a while; the repository keeps its agreed top level.)

- ``token_shards.py``: the token-shard format (schema, dtype rule, file names, manifest with version and
  checksums, its validation) and a small local writer built from the same functions the Beam writer uses.
- ``mixture.py``: the mixture manifest (several token sets, weighted by epochs or shares; no data copied):
  planning the table, writing it, validating it.
- ``files.py``: writing a local file or folder atomically with the modes its neighbours have (umask).

The pipeline wing writes through ``pipeline/tokenize/shards.py`` (which adds Beam filesystems, sharding by
stable hash and stale-file cleanup); the model wing reads through ``model/data.py``.
"""


class FormatError(ValueError):
    """A file does not follow the corridor's format (each wing re-raises it as its own user error)."""
