"""The token-shard format: what ``refinery tokenize`` writes and the trainer memory-maps.

Layout of an output directory ``tokens/``::

    tokens/manifest.json
    tokens/tokenizer.json                      (a copy of the tokenizer used)
    tokens/train/part-00000-of-00008.arrow ...
    tokens/val/part-00000-of-00001.arrow

Each shard is an Arrow IPC *file*, UNCOMPRESSED (so it can be memory-mapped and its values buffer read
without a copy), holding exactly one record batch with columns ``id`` (string) and ``tokens``
(``large_list<uint16>``, or ``large_list<uint32>`` when the vocabulary has more than 65,535 entries).
Every row is one document whose tokens end with the ``<|endoftext|>`` id. Rows are sorted by ``id``
(rows sharing an id by their token ids), a document goes to shard ``stable_hash64(id) % N``, and a shard is written
under a temporary name and renamed when complete, so re-running gives byte-identical files.

``manifest.json``::

    {"format": "webrefinery-token-shards", "version": 1,
     "vocab_size": int, "eot_id": int, "eot_token": str, "dtype": "uint16"|"uint32",
     "tokenizer": "tokenizer.json", "tokenizer_sha256": str, "val_fraction": float,
     "splits": {"train": {"files": [{"name": "part-00000-of-00008.arrow",
                                     "path": "train/part-00000-of-00008.arrow",
                                     "rows": int, "tokens": int, "sha256": str}, ...],
                          "tokens": int, "documents": int},
                "val": {...}}}

``name`` is relative to the split folder, ``path`` to the manifest's folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from typing import Dict, Iterable, List, Mapping, Sequence, Tuple

import numpy as np
import pyarrow as pa

from pipeline.document import stable_hash64
from pipeline.io import fs
from pipeline.io.shards import write_bytes_atomically  # noqa: F401  (also used by tokenize/train.py)
from pipeline.tokenize import EOT_TOKEN, UsageError

SPLITS = ("train", "val")
UINT16_MAX_VOCAB = 65_535  # the contract: uint16 while the vocabulary has at most 65,535 entries
MANIFEST_NAME = "manifest.json"
TOKENIZER_NAME = "tokenizer.json"
FORMAT_NAME = "webrefinery-token-shards"
_PART_RE = re.compile(r"^part-\d{5}-of-\d{5}\.arrow$")
_VAL_SALT = "val\x1f"

Row = Tuple[str, bytes]  # (document id, token ids as raw little-endian bytes of the shard dtype)


def token_dtype_name(vocab_size: int) -> str:
    """``"uint16"`` when every id fits the contract's 65,535-entry limit, else ``"uint32"``."""
    return "uint16" if vocab_size <= UINT16_MAX_VOCAB else "uint32"


def arrow_tokens_type(dtype_name: str) -> pa.DataType:
    return pa.large_list(pa.uint16() if dtype_name == "uint16" else pa.uint32())


def token_schema(dtype_name: str, metadata: Mapping[str, str] | None = None) -> pa.Schema:
    """Schema of a token shard: ``id`` string, ``tokens`` large_list of the dtype."""
    return pa.schema([pa.field("id", pa.string()), pa.field("tokens", arrow_tokens_type(dtype_name))], metadata=metadata)


def shard_file_name(index: int, count: int) -> str:
    return f"part-{index:05d}-of-{count:05d}.arrow"


def shard_index(doc_id: str, count: int) -> int:
    """Which of ``count`` shards a document id goes to."""
    return stable_hash64(doc_id) % count


def is_validation(doc_id: str, val_fraction: float) -> bool:
    """True when the document belongs to the validation split (a salted stable hash of the id)."""
    if val_fraction <= 0.0:
        return False
    return stable_hash64(_VAL_SALT + doc_id) < val_fraction * 2.0**64


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_tokenizer_json(tokenizer_path: str) -> str:
    """The text of a tokenizer.json, local or on a Beam filesystem (gs://...); UsageError when missing."""
    from pipeline.io import fs

    if not tokenizer_path or not (fs.exists(tokenizer_path) and (fs.is_remote(tokenizer_path) or os.path.isfile(tokenizer_path))):
        raise UsageError(f"tokenizer file {tokenizer_path} does not exist (train one with `refinery train-tokenizer`)")
    return fs.read_bytes(tokenizer_path).decode("utf-8")


def tokenizer_facts(tokenizer_path: str, eot_token: str = EOT_TOKEN) -> Dict[str, object]:
    """vocab_size (max id + 1), eot_id, dtype and sha256 of a tokenizer.json (local or gs://...), and its text
    (``tokenizer_json``: encoders are built from it, so workers never need the file); UsageError when unusable."""
    from tokenizers import Tokenizer  # local import: keeps `import pipeline.tokenize.shards` light

    text = read_tokenizer_json(tokenizer_path)
    try:
        tok = Tokenizer.from_str(text)
    except Exception as exc:  # tokenizers raises a plain Exception on bad JSON
        raise UsageError(f"{tokenizer_path} is not a tokenizers tokenizer.json: {str(exc).splitlines()[0]}") from exc
    eot_id = tok.token_to_id(eot_token)
    if eot_id is None:
        raise UsageError(f"tokenizer {tokenizer_path} has no '{eot_token}' token")
    vocab = tok.get_vocab(with_added_tokens=True)
    vocab_size = max(vocab.values()) + 1 if vocab else 0
    return {
        "vocab_size": vocab_size,
        "eot_id": int(eot_id),
        "eot_token": eot_token,
        "dtype": token_dtype_name(vocab_size),
        "tokenizer_sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
        "tokenizer_json": text,
    }


def shard_metadata(facts: Mapping[str, object]) -> Dict[str, str]:
    """Arrow schema metadata stored in every shard (so one file describes itself)."""
    return {k: str(facts[k]) for k in ("vocab_size", "eot_id", "dtype", "tokenizer_sha256")}


def sort_rows(rows: Iterable[Row], dtype_name: str) -> List[Row]:
    """Rows sorted by id, rows with the same id by their token ids (numerically): the order inside a shard."""
    ordered = sorted(rows, key=lambda row: row[0])
    start = 0
    while start < len(ordered):  # ids repeat rarely: only those runs get the (slower) numeric tie-break
        end = start + 1
        while end < len(ordered) and ordered[end][0] == ordered[start][0]:
            end += 1
        if end - start > 1:
            ordered[start:end] = sorted(ordered[start:end],
                                        key=lambda row: np.frombuffer(row[1], dtype=dtype_name).tolist())
        start = end
    return ordered


def rows_to_record_batch(rows: Sequence[Row], dtype_name: str, metadata: Mapping[str, str] | None = None) -> pa.RecordBatch:
    """One record batch from already-sorted rows (tokens are raw bytes of ``dtype_name``)."""
    np_dtype = np.dtype(dtype_name).newbyteorder("<")
    itemsize = np_dtype.itemsize
    lengths = np.fromiter((len(tokens) // itemsize for _, tokens in rows), dtype=np.int64, count=len(rows))
    offsets = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    values = np.frombuffer(b"".join(tokens for _, tokens in rows), dtype=np_dtype).astype(np.dtype(dtype_name), copy=False)
    value_type = arrow_tokens_type(dtype_name).value_type
    tokens = pa.LargeListArray.from_arrays(pa.array(offsets, type=pa.int64()), pa.array(values, type=value_type))
    ids = pa.array([doc_id for doc_id, _ in rows], type=pa.string())
    return pa.RecordBatch.from_arrays([ids, tokens], schema=token_schema(dtype_name, metadata))


def serialize_record_batch(batch: pa.RecordBatch) -> bytes:
    """An uncompressed Arrow IPC file holding exactly ``batch``."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, batch.schema, options=pa.ipc.IpcWriteOptions(compression=None)) as writer:
        writer.write_batch(batch)
    return sink.getvalue().to_pybytes()


def write_token_shard(output_dir: str, split: str, index: int, count: int, rows: Iterable[Row],
                      dtype_name: str, metadata: Mapping[str, str] | None = None) -> Dict[str, object]:
    """Sort ``rows``, write ``output_dir/split/part-i-of-n.arrow`` atomically; return its manifest entry."""
    ordered = sort_rows(rows, dtype_name)
    batch = rows_to_record_batch(ordered, dtype_name, metadata)
    data = serialize_record_batch(batch)
    name = shard_file_name(index, count)
    write_bytes_atomically(_join(output_dir, split, name), data)
    itemsize = np.dtype(dtype_name).itemsize
    return {
        "split": split,
        "name": name,
        "path": f"{split}/{name}",
        "rows": len(ordered),
        "tokens": sum(len(t) for _, t in ordered) // itemsize,
        "sha256": hashlib.sha256(data).hexdigest(),
    }


def finalize_token_output(output_dir: str, tokenizer_path: str, facts: Mapping[str, object],
                          shard_counts: Mapping[str, int], written: Iterable[Mapping[str, object]],
                          val_fraction: float) -> Dict[str, object]:
    """After all shards are written: write empty shards for indexes that got no document, delete stale
    part files (and temporaries of crashed writers) from earlier runs, copy the tokenizer, write ``manifest.json``. Returns the manifest."""
    by_key = {(w["split"], w["name"]): dict(w) for w in written}
    metadata = shard_metadata(facts)
    splits: Dict[str, object] = {}
    for split in SPLITS:
        count = shard_counts[split]
        entries = []
        for i in range(count):
            name = shard_file_name(i, count)
            entry = by_key.get((split, name))
            if entry is None:
                entry = write_token_shard(output_dir, split, i, count, [], str(facts["dtype"]), metadata)
            entries.append({k: entry[k] for k in ("name", "path", "rows", "tokens", "sha256")})
        wanted = {e["name"] for e in entries}
        stale_files = []
        for path in fs.list_files(_join(output_dir, split, "*")):
            stale = fs.basename(path)
            leftover_tmp = stale.startswith("part-") and (".arrow.tmp-" in stale or stale.endswith(".tmp"))
            if (_PART_RE.match(stale) and stale not in wanted) or leftover_tmp:
                stale_files.append(path)
        fs.delete(stale_files)
        splits[split] = {
            "files": entries,
            "tokens": sum(e["tokens"] for e in entries),
            "documents": sum(e["rows"] for e in entries),
        }
    tok_copy = _join(output_dir, TOKENIZER_NAME)
    same_file = not fs.is_remote(tok_copy) and not fs.is_remote(tokenizer_path) and \
        os.path.abspath(tok_copy) == os.path.abspath(tokenizer_path)
    if not same_file:
        text = facts.get("tokenizer_json")
        data = text.encode("utf-8") if isinstance(text, str) else fs.read_bytes(tokenizer_path)
        write_bytes_atomically(tok_copy, data)
    manifest = {
        "format": FORMAT_NAME,
        "version": 1,
        "vocab_size": facts["vocab_size"],
        "eot_id": facts["eot_id"],
        "eot_token": facts["eot_token"],
        "dtype": facts["dtype"],
        "tokenizer": TOKENIZER_NAME,
        "tokenizer_sha256": facts["tokenizer_sha256"],
        "val_fraction": val_fraction,
        "splits": splits,
    }
    write_bytes_atomically(_join(output_dir, MANIFEST_NAME),
                           (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode("utf-8"))
    return manifest


def read_token_shard(path: str) -> Tuple[List[str], np.ndarray, np.ndarray]:
    """(ids, flat token values, int64 offsets) of one shard, memory-mapped (values are a zero-copy view)."""
    reader = pa.ipc.open_file(pa.memory_map(path, "r"))
    if reader.num_record_batches != 1:
        raise ValueError(f"{path}: expected exactly one record batch, found {reader.num_record_batches}")
    batch = reader.get_batch(0)
    tokens = batch.column(batch.schema.get_field_index("tokens"))
    values = tokens.values.to_numpy(zero_copy_only=True)
    offsets = tokens.offsets.to_numpy(zero_copy_only=True)
    return batch.column(batch.schema.get_field_index("id")).to_pylist(), values, offsets


def load_manifest(output_dir: str) -> Dict[str, object]:
    return json.loads(fs.read_bytes(_join(output_dir, MANIFEST_NAME)))


def _join(base: str, *names: str) -> str:
    return fs.join(base, *names)
