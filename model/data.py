"""Memory-mapped token-shard loader with a resumable, rank-aware position.

Token shards are Arrow IPC *file* format with a ``tokens`` column (``large_list<uint16>`` or
``large_list<uint32>``), one row per document, every document ending with ``<|endoftext|>``
(written by ``refinery tokenize``; see ARCHITECTURE.md). ``TokenShards`` memory-maps each file and
keeps, per record batch, a NumPy view of the ``tokens`` column's flat values buffer: no copy, no
Python objects per token. The shards are concatenated logically into one token stream (documents
packed back to back).

``WindowLoader`` cuts that stream into non-overlapping windows of ``block_size + 1`` tokens (window
``w`` covers tokens ``[w*block_size, w*block_size + block_size]``; neighbours share one boundary
token, which is input in one window and target in the previous one) and serves them in a shuffled
order per epoch: ``permutation(n_windows)`` drawn from ``numpy.random.default_rng([seed, epoch])``.
Windows may cross document boundaries (the model sees ``<|endoftext|>`` and learns to reset).

Distributed split: the epoch's ordered windows are consumed in *rounds*; in one round every rank
takes ``batch_size`` consecutive windows, rank ``r`` the ``r``-th group (i.e. rank r takes every
world_size-th micro-batch), so ranks never overlap. The state is ``(seed, epoch, position)`` where
``position`` counts windows consumed in the epoch by all ranks together: identical on every rank, so
rank 0's checkpoint resumes all ranks exactly (even with another world size or batch size, since
position is counted in windows). At the end of an epoch the windows that do not fill a whole round
(fewer than ``world_size * batch_size``) are left out; the next epoch uses a fresh permutation.

On an uncompressed IPC file the loader holds only page-cache memory. A zstd-compressed file still
works, but Arrow must decompress it into RAM; ``TokenShards.resident_bytes`` reports how much.
"""

from __future__ import annotations

import json
import queue
import threading
import warnings
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np
import pyarrow as pa
import torch

from model.errors import UserError, UserValueError

MANIFEST = "manifest.json"


class TokenDataError(UserError, ValueError):
    """Token shards are missing, malformed, or too small for the requested batch."""


def read_token_manifest(tokens_dir) -> dict:
    """tokens_dir/manifest.json as a dict ({} when there is none)."""
    path = Path(tokens_dir) / MANIFEST
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise TokenDataError(f"{path} is not valid JSON: {e}") from e


def split_files(tokens_dir, split: str, manifest: Optional[dict] = None) -> list[Path]:
    """The .arrow files of one split: as listed in the manifest, else every tokens_dir/split/*.arrow."""
    tokens_dir = Path(tokens_dir)
    manifest = read_token_manifest(tokens_dir) if manifest is None else manifest
    listed = (manifest.get("splits", {}).get(split) or {}).get("files")
    if listed:
        files = []
        for entry in listed:
            if isinstance(entry, dict):
                entry = entry.get("path") or entry.get("file") or entry.get("name")
            name = Path(entry)
            candidates = [name] if name.is_absolute() else [tokens_dir / name, tokens_dir / split / name]
            found = next((c for c in candidates if c.is_file()), None)
            if found is None:
                raise TokenDataError(f"{tokens_dir / MANIFEST} lists {name} for split {split!r}, "
                                     f"but it is not at any of {[str(c) for c in candidates]}")
            files.append(found)
        return files
    return sorted((tokens_dir / split).glob("*.arrow"))


class TokenShards:
    """One split's token stream: memory-mapped shards, concatenated logically, read by position."""

    def __init__(self, files: Sequence, vocab_size: Optional[int] = None, eot_id: Optional[int] = None):
        self.files = [Path(f) for f in files]
        if not self.files:
            raise TokenDataError("no token shard files given")
        self._keep_alive = []  # memory maps and record batches that own the viewed buffers
        self._chunks: list[np.ndarray] = []
        self.num_documents = 0
        before = pa.total_allocated_bytes()
        dtype = None
        for path in self.files:
            try:
                mm = pa.memory_map(str(path), "r")
                reader = pa.ipc.open_file(mm)
            except (OSError, pa.ArrowInvalid) as e:
                raise TokenDataError(f"{path} is not a readable Arrow IPC file: {e}") from e
            if "tokens" not in reader.schema.names:
                raise TokenDataError(f"{path} has no 'tokens' column (columns: {reader.schema.names})")
            field_type = reader.schema.field("tokens").type
            if not (pa.types.is_large_list(field_type) or pa.types.is_list(field_type)) or \
                    field_type.value_type not in (pa.uint16(), pa.uint32()):
                raise TokenDataError(f"{path}: 'tokens' must be large_list<uint16|uint32>, got {field_type}")
            this = np.uint16 if field_type.value_type == pa.uint16() else np.uint32
            if dtype is not None and this != dtype:
                raise TokenDataError(f"{path}: token type {field_type.value_type} differs from earlier shards")
            dtype = this
            self._keep_alive.append(mm)
            for i in range(reader.num_record_batches):
                batch = reader.get_batch(i)
                col = batch.column(batch.schema.get_field_index("tokens"))
                self.num_documents += len(col)
                if col.null_count:
                    raise TokenDataError(f"{path}: record batch {i} has {col.null_count} null token lists")
                values = col.flatten()  # honours the array's offset; zero-copy slice of the values buffer
                if len(values) == 0:
                    continue
                try:
                    view = values.to_numpy(zero_copy_only=True)
                except pa.ArrowInvalid as e:
                    raise TokenDataError(f"{path}: record batch {i} tokens cannot be viewed without a copy: {e}") from e
                self._keep_alive.append(batch)
                self._chunks.append(view)
        self.dtype = np.dtype(dtype)
        self.resident_bytes = max(0, pa.total_allocated_bytes() - before)
        lengths = np.array([len(c) for c in self._chunks], dtype=np.int64)
        self._starts = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        self.total_tokens = int(self._starts[-1])
        self.eot_id = eot_id
        if vocab_size is None:
            vocab_size = 1 + max((int(c.max()) for c in self._chunks), default=0)
            warnings.warn(f"no vocab_size given for {self.files[0].parent}: inferred {vocab_size} from the largest id")
        self.vocab_size = int(vocab_size)

    def __len__(self) -> int:
        return self.total_tokens

    def read(self, start: int, length: int, out: Optional[np.ndarray] = None) -> np.ndarray:
        """Tokens [start, start+length) of the logical stream, copied into ``out`` (or a new array)."""
        if start < 0 or start + length > self.total_tokens:
            raise IndexError(f"tokens [{start}, {start + length}) outside the stream of {self.total_tokens}")
        if out is None:
            out = np.empty(length, dtype=self.dtype)
        c = int(np.searchsorted(self._starts, start, side="right")) - 1
        filled = 0
        while filled < length:
            chunk = self._chunks[c]
            offset = start + filled - int(self._starts[c])
            take = min(length - filled, len(chunk) - offset)
            out[filled:filled + take] = chunk[offset:offset + take]
            filled += take
            c += 1
        return out


def open_token_split(tokens_dir, split: str) -> TokenShards:
    """TokenShards of tokens_dir's ``split`` ("train"/"val"), with vocab/eot from manifest.json."""
    tokens_dir = Path(tokens_dir)
    manifest = read_token_manifest(tokens_dir)
    files = split_files(tokens_dir, split, manifest)
    if not files:
        raise TokenDataError(f"no token shards for split {split!r} under {tokens_dir} "
                             f"(expected {tokens_dir / split}/*.arrow or a list in {MANIFEST})")
    shards = TokenShards(files, vocab_size=manifest.get("vocab_size"), eot_id=manifest.get("eot_id"))
    declared = manifest.get("dtype")
    if declared is not None and np.dtype(declared) != shards.dtype:
        raise TokenDataError(f"{tokens_dir / MANIFEST} says dtype {declared}, the shards hold {shards.dtype}")
    return shards


class WindowLoader:
    """Batches (x, y) of shape (batch_size, block_size), y = x shifted by one, from shuffled windows.

    ``next_batch()`` (or iteration) never ends: epochs follow one another. ``state_dict()`` reflects
    the batches handed out so far (not those prefetched), so a checkpoint taken between steps
    resumes with exactly the next batch.
    """

    def __init__(self, shards: TokenShards, block_size: int, batch_size: int, *, rank: int = 0,
                 world_size: int = 1, seed: int = 0, shuffle: bool = True, device="cpu",
                 prefetch: int = 0, pin_memory: Optional[bool] = None):
        if block_size <= 0 or batch_size <= 0:
            raise UserValueError("block_size and batch_size must be positive")
        if not 0 <= rank < world_size:
            raise UserValueError(f"rank {rank} is outside world size {world_size}")
        self.shards = shards
        self.block_size = int(block_size)
        self.batch_size = int(batch_size)
        self.rank = rank
        self.world_size = world_size
        self.seed = int(seed)
        self.shuffle = shuffle
        self.device = torch.device(device)
        self.prefetch = int(prefetch)
        self.pin_memory = (self.device.type == "cuda") if pin_memory is None else pin_memory
        self.n_windows = max(0, (shards.total_tokens - 1) // self.block_size)
        self.round_windows = self.world_size * self.batch_size
        if self.n_windows < self.round_windows:
            raise TokenDataError(
                f"{shards.total_tokens:,} tokens make {self.n_windows} windows of {self.block_size}+1 tokens, fewer "
                f"than one round of {self.world_size} rank(s) x batch {self.batch_size}: use more data or smaller batches")
        self.rounds_per_epoch = self.n_windows // self.round_windows
        self.epoch = 0
        self.position = 0  # windows consumed in this epoch, by all ranks together
        self._order_epoch = -1
        self._order: Optional[np.ndarray] = None
        self._thread: Optional[threading.Thread] = None
        self._queue: Optional[queue.Queue] = None
        self._stop: Optional[threading.Event] = None
        # producer-side cursor (runs ahead of the consumer when prefetching)
        self._p_epoch = 0
        self._p_position = 0

    # ---- order and host batches ------------------------------------------------------------

    def window_order(self, epoch: int) -> np.ndarray:
        """The order in which the epoch visits window indices (a permutation, or 0..n-1 unshuffled)."""
        if self._order_epoch != epoch:
            if self.shuffle:
                rng = np.random.default_rng([self.seed, epoch])
                order = rng.permutation(self.n_windows)
                self._order = order.astype(np.uint32) if self.n_windows < 2**32 else order
            else:
                self._order = np.arange(self.n_windows, dtype=np.int64)
            self._order_epoch = epoch
        return self._order

    def windows_for(self, epoch: int, position: int) -> np.ndarray:
        """Window indices this rank takes in the round that starts at ``position`` of ``epoch``."""
        start = position + self.rank * self.batch_size
        return self.window_order(epoch)[start:start + self.batch_size].astype(np.int64)

    def _advance(self, epoch: int, position: int) -> tuple[int, int]:
        position += self.round_windows
        if position + self.round_windows > self.n_windows:
            return epoch + 1, 0
        return epoch, position

    def _host_batch(self, epoch: int, position: int) -> torch.Tensor:
        windows = self.windows_for(epoch, position)
        buf = np.empty((self.batch_size, self.block_size + 1), dtype=np.int64)
        for row, w in enumerate(windows):
            self.shards.read(int(w) * self.block_size, self.block_size + 1, out=buf[row])
        t = torch.from_numpy(buf)
        if self.pin_memory:
            t = t.pin_memory()
        return t

    def _produce(self) -> tuple[torch.Tensor, int, int]:
        t = self._host_batch(self._p_epoch, self._p_position)
        self._p_epoch, self._p_position = self._advance(self._p_epoch, self._p_position)
        return t, self._p_epoch, self._p_position

    # ---- prefetch thread -------------------------------------------------------------------

    def _worker(self, q: queue.Queue, stop: threading.Event) -> None:
        try:
            while not stop.is_set():
                item = self._produce()
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
        except BaseException as e:  # hand the error to the consumer instead of dying silently
            q.put(e)

    def _start_thread(self) -> None:
        self._queue = queue.Queue(maxsize=self.prefetch)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._worker, args=(self._queue, self._stop),
                                        name="token-prefetch", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop the prefetch thread (if any); the loader can still be used afterwards."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout=10)
            self._thread = None
            self._queue = None
        self._p_epoch, self._p_position = self.epoch, self.position

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    # ---- public API ------------------------------------------------------------------------

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next (x, y) for this rank, on the loader's device."""
        if self.prefetch > 0:
            if self._thread is None:
                self._p_epoch, self._p_position = self.epoch, self.position
                self._start_thread()
            item = self._queue.get()
            if isinstance(item, BaseException):
                self.close()
                raise item
            t, self.epoch, self.position = item
        else:
            self._p_epoch, self._p_position = self.epoch, self.position
            t, self.epoch, self.position = self._produce()
        if self.device.type != "cpu":
            t = t.to(self.device, non_blocking=self.pin_memory)
        return t[:, :-1], t[:, 1:]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        while True:
            yield self.next_batch()

    def state_dict(self) -> dict:
        return {"seed": self.seed, "epoch": self.epoch, "position": self.position,
                "block_size": self.block_size, "n_windows": self.n_windows, "shuffle": self.shuffle}

    def load_state_dict(self, state: dict) -> None:
        """Continue from a saved state; the data (window count), block size and seed must match."""
        for key in ("seed", "block_size", "n_windows", "shuffle"):
            if key in state and state[key] != getattr(self, key):
                raise TokenDataError(f"data loader state has {key}={state[key]!r}, this loader has "
                                     f"{getattr(self, key)!r}: the token data or settings changed since the checkpoint")
        epoch, position = int(state["epoch"]), int(state["position"])
        if position < 0 or epoch < 0:
            raise TokenDataError(f"bad data loader state {state}")
        self.close()
        if position + self.round_windows > self.n_windows:  # e.g. resumed with a larger world/batch
            epoch, position = epoch + 1, 0
        self.epoch, self.position = epoch, position
        self._p_epoch, self._p_position = epoch, position


def write_token_shards(tokens_dir, split: str, documents, vocab_size: int, eot_id: int,
                       docs_per_shard: int = 1000, tokenizer_json: Optional[str] = None) -> list[Path]:
    """Write ``documents`` (sequences of token ids, each already ending with ``eot_id``) as
    uncompressed Arrow IPC token shards tokens_dir/split/NNNNN.arrow and record them in manifest.json.

    A minimal writer of the token-shard contract for tests and benchmarks (the pipeline's
    ``refinery tokenize`` is the real producer).
    """
    tokens_dir = Path(tokens_dir)
    (tokens_dir / split).mkdir(parents=True, exist_ok=True)
    value_type = pa.uint16() if vocab_size <= 65536 else pa.uint32()
    np_type = np.uint16 if vocab_size <= 65536 else np.uint32
    schema = pa.schema([("id", pa.string()), ("tokens", pa.large_list(value_type))])
    files, total, buffer, n = [], 0, [], 0

    def flush():
        nonlocal buffer
        if not buffer:
            return
        path = tokens_dir / split / f"{len(files):05d}.arrow"
        flat = np.concatenate([np.asarray(d, dtype=np_type) for _, d in buffer])
        offsets = np.concatenate([[0], np.cumsum([len(d) for _, d in buffer])]).astype(np.int64)
        tokens = pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(flat, type=value_type))
        table = pa.table({"id": pa.array([i for i, _ in buffer], pa.string()), "tokens": tokens}, schema=schema)
        tmp = path.with_suffix(".arrow.tmp")
        with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
            writer.write_table(table)
        tmp.replace(path)
        files.append(path)
        buffer = []

    for doc in documents:
        doc = list(doc) if not isinstance(doc, np.ndarray) else doc
        if len(doc) == 0 or int(doc[-1]) != eot_id:
            raise ValueError(f"document {n} does not end with the end-of-text id {eot_id}")
        buffer.append((f"{split}-{n}", doc))
        total += len(doc)
        n += 1
        if len(buffer) >= docs_per_shard:
            flush()
    flush()
    manifest = read_token_manifest(tokens_dir)
    manifest.update({"vocab_size": int(vocab_size), "eot_id": int(eot_id),
                     "dtype": "uint16" if np_type is np.uint16 else "uint32"})
    manifest.setdefault("splits", {})[split] = {"files": [f"{split}/{p.name}" for p in files], "tokens": int(total),
                                                "documents": n}
    (tokens_dir / MANIFEST).write_text(json.dumps(manifest, indent=2))
    if tokenizer_json is not None:
        (tokens_dir / "tokenizer.json").write_text(tokenizer_json)
    return files
