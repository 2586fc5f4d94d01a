"""Writing token shards from the Beam pipeline: sharding, object stores, stale files, the tokenizer's facts.

The format itself (schema, dtype rule, file names, manifest with version and checksums) is defined once
in ``model/corridor/token_shards.py``, which the trainer's reader (``model/data.py``) uses too; this module adds
what only the pipeline needs: a document goes to shard ``stable_hash64(id) % N`` and to the validation
split by a salted stable hash of its id, shards are written atomically to local disk or any Beam
filesystem (``gs://...``), shard indexes that got no document get an empty shard, part files of earlier
runs are deleted, and the tokenizer is copied beside the shards. Re-running gives byte-identical files.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from typing import Dict, Iterable, List, Mapping, Tuple

import numpy as np
import pyarrow as pa

from model.corridor import FormatError
from model.corridor.token_shards import (FORMAT_NAME, FORMAT_VERSION, MANIFEST_NAME, SPLITS, TOKENIZER_NAME,  # noqa: F401
                                   UINT16_MAX_VOCAB, Row, arrow_tokens_type, build_manifest, check_manifest,
                                   encode_shard, manifest_bytes, rows_to_record_batch, serialize_record_batch,
                                   sha256_file, shard_file_name, shard_metadata, sort_rows, token_dtype_name,
                                   token_schema)
from pipeline.document import stable_hash64
from pipeline.io import fs
from pipeline.io.shards import write_bytes_atomically  # noqa: F401  (also used by tokenize/train.py)
from pipeline.tokenize import EOT_TOKEN, UsageError

_PART_RE = re.compile(r"^part-\d{5}-of-\d{5}\.arrow$")
_VAL_SALT = "val\x1f"


def shard_index(doc_id: str, count: int) -> int:
    """Which of ``count`` shards a document id goes to."""
    return stable_hash64(doc_id) % count


def is_validation(doc_id: str, val_fraction: float) -> bool:
    """True when the document belongs to the validation split (a salted stable hash of the id)."""
    if val_fraction <= 0.0:
        return False
    return stable_hash64(_VAL_SALT + doc_id) < val_fraction * 2.0**64


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


def write_token_shard(output_dir: str, split: str, index: int, count: int, rows: Iterable[Row],
                      dtype_name: str, metadata: Mapping[str, str] | None = None) -> Dict[str, object]:
    """Sort ``rows``, write ``output_dir/split/part-i-of-n.arrow`` atomically; return its manifest entry."""
    data, entry = encode_shard(split, index, count, rows, dtype_name, metadata)
    write_bytes_atomically(_join(output_dir, split, str(entry["name"])), data)
    return entry


def finalize_token_output(output_dir: str, tokenizer_path: str, facts: Mapping[str, object],
                          shard_counts: Mapping[str, int], written: Iterable[Mapping[str, object]],
                          val_fraction: float) -> Dict[str, object]:
    """After all shards are written: write empty shards for indexes that got no document, delete stale
    part files (and temporaries of crashed writers) from earlier runs, copy the tokenizer, write ``manifest.json``. Returns the manifest."""
    by_key = {(w["split"], w["name"]): dict(w) for w in written}
    metadata = shard_metadata(facts)
    entries_by_split: Dict[str, List[Dict[str, object]]] = {}
    for split in SPLITS:
        count = shard_counts[split]
        entries = entries_by_split.setdefault(split, [])
        for i in range(count):
            name = shard_file_name(i, count)
            entry = by_key.get((split, name))
            if entry is None:
                entry = write_token_shard(output_dir, split, i, count, [], str(facts["dtype"]), metadata)
            entries.append(entry)
        wanted = {e["name"] for e in entries}
        stale_files = []
        for path in fs.list_files(_join(output_dir, split, "*")):
            stale = fs.basename(path)
            leftover_tmp = stale.startswith("part-") and (".arrow.tmp-" in stale or stale.endswith(".tmp"))
            if (_PART_RE.match(stale) and stale not in wanted) or leftover_tmp:
                stale_files.append(path)
        fs.delete(stale_files)
    tok_copy = _join(output_dir, TOKENIZER_NAME)
    same_file = not fs.is_remote(tok_copy) and not fs.is_remote(tokenizer_path) and \
        os.path.abspath(tok_copy) == os.path.abspath(tokenizer_path)
    if not same_file:
        text = facts.get("tokenizer_json")
        data = text.encode("utf-8") if isinstance(text, str) else fs.read_bytes(tokenizer_path)
        write_bytes_atomically(tok_copy, data)
    manifest = build_manifest(facts, entries_by_split, val_fraction)
    write_bytes_atomically(_join(output_dir, MANIFEST_NAME), manifest_bytes(manifest))
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
    """The manifest of a token set (local or gs://...), checked: UsageError when unreadable or unknown."""
    path = _join(output_dir, MANIFEST_NAME)
    try:
        return check_manifest(json.loads(fs.read_bytes(path)), path)
    except (FormatError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(str(exc).splitlines()[0]) from exc


def _join(base: str, *names: str) -> str:
    return fs.join(base, *names)
