"""The token-shard format: what ``refinery tokenize`` writes and the trainer memory-maps (one definition).

Layout of a token set (a folder)::

    tokens/manifest.json
    tokens/tokenizer.json                      (a copy of the tokenizer used)
    tokens/train/part-00000-of-00008.arrow ...
    tokens/val/part-00000-of-00001.arrow

Each shard is an Arrow IPC *file*, UNCOMPRESSED (so it can be memory-mapped and its values buffer read
without a copy), holding exactly one record batch with columns ``id`` (string) and ``tokens``
(``large_list<uint16>``, or ``large_list<uint32>`` when the vocabulary has more than 65,535 entries).
Every row is one document whose tokens end with the ``<|endoftext|>`` id; rows are sorted by ``id``
(rows sharing an id by their token ids). The schema metadata repeats vocab_size, eot_id, dtype and the
tokenizer's sha256, so one file describes itself.

``manifest.json`` (``FORMAT_NAME``, version ``FORMAT_VERSION``)::

    {"format": "webrefinery-token-shards", "version": 1,
     "vocab_size": int, "eot_id": int, "eot_token": str, "dtype": "uint16"|"uint32",
     "tokenizer": "tokenizer.json"|null, "tokenizer_sha256": str|null, "val_fraction": float,
     "splits": {"train": {"files": [{"name": "part-00000-of-00008.arrow",
                                     "path": "train/part-00000-of-00008.arrow",
                                     "rows": int, "tokens": int, "bytes": int, "sha256": str}, ...],
                          "tokens": int, "documents": int},
                "val": {...}}}

``name`` is relative to the split folder, ``path`` to the manifest's folder. ``bytes`` (the file size)
was added without a version change (readers check it when present). A reader refuses a manifest whose
``format`` is not ``FORMAT_NAME`` or whose ``version`` it does not know (``manifest_problems``).

Writers: the Beam pipeline (``pipeline/tokenize/shards.py``: a document goes to shard
``stable_hash64(id) % N``, files may be on object stores) and ``write_token_set`` below (local, the caller
chooses which documents form each shard: tests and benchmarks). Both build shard bytes with
``encode_shard`` and the manifest with ``build_manifest``, so they write the same format.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import pyarrow as pa

from model.corridor import FormatError
from model.corridor.files import write_bytes_atomic

FORMAT_NAME = "webrefinery-token-shards"
FORMAT_VERSION = 1
KNOWN_VERSIONS = (1,)
SPLITS = ("train", "val")
UINT16_MAX_VOCAB = 65_535  # the contract: uint16 while the vocabulary has at most 65,535 entries
MANIFEST_NAME = "manifest.json"
TOKENIZER_NAME = "tokenizer.json"
EOT_TOKEN = "<|endoftext|>"
ENTRY_KEYS = ("name", "path", "rows", "tokens", "bytes", "sha256")

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


def sha256_file(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


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


def encode_shard(split: str, index: int, count: int, rows: Iterable[Row], dtype_name: str,
                 metadata: Mapping[str, str] | None = None) -> Tuple[bytes, Dict[str, object]]:
    """(file bytes, manifest entry with ``split``) of shard ``index`` of ``count`` holding ``rows``."""
    ordered = sort_rows(rows, dtype_name)
    data = serialize_record_batch(rows_to_record_batch(ordered, dtype_name, metadata))
    name = shard_file_name(index, count)
    itemsize = np.dtype(dtype_name).itemsize
    return data, {
        "split": split,
        "name": name,
        "path": f"{split}/{name}",
        "rows": len(ordered),
        "tokens": sum(len(t) for _, t in ordered) // itemsize,
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }


def build_manifest(facts: Mapping[str, object], entries_by_split: Mapping[str, Sequence[Mapping[str, object]]],
                   val_fraction: float) -> Dict[str, object]:
    """The manifest of a token set whose shards have the given entries (in shard order, per split)."""
    splits: Dict[str, object] = {}
    for split in SPLITS:
        entries = [{k: e[k] for k in ENTRY_KEYS if k in e} for e in entries_by_split.get(split, [])]
        splits[split] = {
            "files": entries,
            "tokens": sum(int(e["tokens"]) for e in entries),
            "documents": sum(int(e["rows"]) for e in entries),
        }
    return {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "vocab_size": facts["vocab_size"],
        "eot_id": facts["eot_id"],
        "eot_token": facts.get("eot_token", EOT_TOKEN),
        "dtype": facts["dtype"],
        "tokenizer": TOKENIZER_NAME if facts.get("tokenizer_sha256") else None,
        "tokenizer_sha256": facts.get("tokenizer_sha256"),
        "val_fraction": val_fraction,
        "splits": splits,
    }


def manifest_bytes(manifest: Mapping[str, object]) -> bytes:
    """How a manifest is stored: sorted keys, two-space indent, final newline."""
    return (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode("utf-8")


def manifest_problems(manifest: object, where: str = MANIFEST_NAME) -> List[str]:
    """What makes ``manifest`` unreadable by this code (empty when it is a known, well-formed version)."""
    if not isinstance(manifest, dict):
        return [f"{where} is not a JSON object"]
    if manifest.get("format") != FORMAT_NAME:
        return [f"{where} is not a {FORMAT_NAME} manifest (format {manifest.get('format')!r}); token sets are "
                f"written by `refinery tokenize` (re-run it for folders made by older versions)"]
    if manifest.get("version") not in KNOWN_VERSIONS:
        return [f"{where} has {FORMAT_NAME} version {manifest.get('version')!r}, this code reads versions "
                f"{list(KNOWN_VERSIONS)}: upgrade webrefinery or re-run `refinery tokenize`"]
    out = []
    for key in ("vocab_size", "eot_id", "dtype", "splits"):
        if key not in manifest:
            out.append(f"{where} has no {key!r}")
    if manifest.get("dtype") not in (None, "uint16", "uint32"):
        out.append(f"{where}: dtype {manifest.get('dtype')!r} is not uint16 or uint32")
    for split, info in (manifest.get("splits") or {}).items():
        for i, entry in enumerate((info or {}).get("files") or []):
            missing = [k for k in ("path", "rows", "tokens", "sha256") if not isinstance(entry, dict) or k not in entry]
            if missing:
                out.append(f"{where}: split {split!r} file {i} lacks {missing}")
                break
    return out


def check_manifest(manifest: object, where: str = MANIFEST_NAME) -> Dict[str, object]:
    """``manifest`` itself when readable, else FormatError with the first problem."""
    problems = manifest_problems(manifest, where)
    if problems:
        raise FormatError(problems[0])
    return manifest  # type: ignore[return-value]


def read_manifest(tokens_dir) -> Optional[Dict[str, object]]:
    """The checked manifest of a local token set, or None when the folder has none."""
    path = Path(tokens_dir) / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise FormatError(f"{path} is not valid JSON: {e}") from e
    return check_manifest(manifest, str(path))


def verify_token_set(tokens_dir, splits: Sequence[str] = SPLITS) -> Tuple[int, List[str]]:
    """(files checked, problems): the sha256 and size of every file the manifest lists, a full read of the data."""
    tokens_dir = Path(tokens_dir)
    manifest = read_manifest(tokens_dir)
    if manifest is None:
        return 0, [f"{tokens_dir} has no {MANIFEST_NAME}: nothing to verify checksums against"]
    n, problems = 0, []
    for split in splits:
        for entry in (manifest["splits"].get(split) or {}).get("files") or []:
            path = tokens_dir / str(entry["path"])
            if not path.is_file():
                problems.append(f"{path} is missing (listed in {tokens_dir / MANIFEST_NAME})")
                continue
            digest = sha256_file(path)
            if digest != entry["sha256"]:
                problems.append(f"{path} fails its sha256 check (manifest {str(entry['sha256'])[:16]}..., file "
                                f"{digest[:16]}...): the shard was modified or damaged; re-run refinery tokenize")
            n += 1
    return n, problems


def write_token_set(out_dir, splits: Mapping[str, Sequence[Sequence[Sequence[int]]]], vocab_size: int,
                    eot_id: int, tokenizer_json: Optional[str] = None, eot_token: str = EOT_TOKEN,
                    id_prefix: Optional[str] = None) -> Dict[str, object]:
    """Write a complete local token set: ``splits[split][i]`` is the list of documents (token-id sequences,
    each ending with ``eot_id``) of shard ``i``; a split may be missing or have no shard. Document ids are
    ``{split}-{n:09d}`` numbered across the split's shards, so shard order and in-shard order (sorted by id)
    keep the caller's document order. Returns the manifest (also written, last, to ``manifest.json``).

    The small writer for tests and benchmarks; ``refinery tokenize`` writes the same format at scale."""
    out_dir = Path(out_dir)
    dtype = token_dtype_name(vocab_size)
    text = tokenizer_json
    facts = {"vocab_size": int(vocab_size), "eot_id": int(eot_id), "eot_token": eot_token, "dtype": dtype,
             "tokenizer_sha256": hashlib.sha256(text.encode("utf-8")).hexdigest() if text is not None else None}
    metadata = shard_metadata(facts)
    entries: Dict[str, List[Dict[str, object]]] = {}
    for split in SPLITS:
        shards = list(splits.get(split) or [])
        if not shards and split == "train":
            raise FormatError("a token set needs at least one train shard")
        n = 0
        entries[split] = []
        for index, docs in enumerate(shards):
            rows = []
            for doc in docs:
                arr = np.asarray(doc)
                if arr.ndim != 1 or len(arr) == 0 or int(arr[-1]) != eot_id:
                    raise FormatError(f"{split} document {n} does not end with the end-of-text id {eot_id}")
                if int(arr.min()) < 0 or int(arr.max()) >= vocab_size:
                    raise FormatError(f"{split} document {n} has ids outside [0, {vocab_size})")
                rows.append((f"{id_prefix or split}-{n:09d}", arr.astype(np.dtype(dtype).newbyteorder("<")).tobytes()))
                n += 1
            data, entry = encode_shard(split, index, len(shards), rows, dtype, metadata)
            write_bytes_atomic(out_dir / entry["path"], data)
            entries[split].append(entry)
    if text is not None:
        write_bytes_atomic(out_dir / TOKENIZER_NAME, text.encode("utf-8"))
    manifest = build_manifest(facts, entries, val_fraction=0.0)
    write_bytes_atomic(out_dir / MANIFEST_NAME, manifest_bytes(manifest))
    return manifest


def chunk_documents(documents: Iterable[Sequence[int]], docs_per_shard: int) -> List[List[Sequence[int]]]:
    """Consecutive documents grouped into shards of ``docs_per_shard`` (the last may be shorter)."""
    shards: List[List[Sequence[int]]] = [[]]
    for doc in documents:
        if len(shards[-1]) >= docs_per_shard:
            shards.append([])
        shards[-1].append(doc)
    return shards if shards[0] else []
