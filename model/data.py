"""Memory-mapped token-shard loader with a resumable, rank-aware position.

Token shards are Arrow IPC *file* format with a ``tokens`` column (``large_list<uint16>`` or
``large_list<uint32>``), one row per document, every document ending with ``<|endoftext|>``, listed in a
versioned ``manifest.json`` with per-file checksums: the format is defined once, in
``model/corridor/token_shards.py``, and written by ``refinery tokenize`` (tests write it with that module's
``write_token_set``). This module is the one reader; it needs no Beam. ``TokenShards`` memory-maps each file and
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

What is verified when: opening a split refuses a manifest of an unknown format or version, and checks
every listed file's size (``bytes``), row count and token count against the manifest before training
(cheap: sizes and Arrow metadata, no pass over the data), so a truncated, swapped or re-written shard is
an error naming the file. The sha256 of every file (a full read) is checked by ``verify_token_checksums``,
which ``refinery mix`` runs on its sources and tests run on written sets.

On an uncompressed IPC file the loader holds only page-cache memory. A zstd-compressed file still
works, but Arrow must decompress it into RAM; ``TokenShards.resident_bytes`` reports how much.
"""

from __future__ import annotations

import queue
import threading
import warnings
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np
import pyarrow as pa
import torch

from model.corridor import FormatError
from model.corridor.token_shards import MANIFEST_NAME as MANIFEST
from model.corridor.token_shards import SPLITS, read_manifest, verify_token_set
from model.errors import UserError, UserValueError


class TokenDataError(UserError, ValueError):
    """Token shards are missing, malformed, or too small for the requested batch."""


def read_token_manifest(tokens_dir) -> dict:
    """tokens_dir/manifest.json as a dict, checked ({} when there is none); TokenDataError when it is not a
    token-shard manifest of a version this code reads."""
    try:
        return read_manifest(tokens_dir) or {}
    except FormatError as e:
        raise TokenDataError(str(e)) from e


def split_entries(tokens_dir, split: str, manifest: Optional[dict] = None) -> list[tuple[Path, Optional[dict]]]:
    """(file, its manifest entry) for each .arrow file of one split: as listed in the manifest, else every
    tokens_dir/split/*.arrow (entry None: nothing to check it against)."""
    tokens_dir = Path(tokens_dir)
    manifest = read_token_manifest(tokens_dir) if manifest is None else manifest
    if not manifest:
        return [(p, None) for p in sorted((tokens_dir / split).glob("*.arrow"))]
    out = []
    for entry in (manifest.get("splits", {}).get(split) or {}).get("files") or []:
        path = tokens_dir / entry["path"]
        if not path.is_file():
            raise TokenDataError(f"{tokens_dir / MANIFEST} lists {entry['path']} for split {split!r}, but {path} "
                                 f"is not there")
        out.append((path, entry))
    return out


def split_files(tokens_dir, split: str, manifest: Optional[dict] = None) -> list[Path]:
    """The .arrow files of one split: as listed in the manifest, else every tokens_dir/split/*.arrow."""
    return [path for path, _ in split_entries(tokens_dir, split, manifest)]


def verify_token_checksums(tokens_dir, splits=SPLITS) -> int:
    """Check the sha256 of every file the manifest lists (a full read); return the number of files.
    TokenDataError naming the first file that differs (or when there is no manifest to check against)."""
    try:
        n, problems = verify_token_set(tokens_dir, splits)
    except FormatError as e:
        raise TokenDataError(str(e)) from e
    if problems:
        raise TokenDataError(problems[0])
    return n


class TokenShards:
    """One split's token stream: memory-mapped shards, concatenated logically, read by position."""

    def __init__(self, files: Sequence, vocab_size: Optional[int] = None, eot_id: Optional[int] = None,
                 entries: Optional[Sequence[Optional[dict]]] = None):
        """``entries``: the manifest entry of each file (or None), checked against the file (size, rows, tokens)."""
        self.files = [Path(f) for f in files]
        if not self.files:
            raise TokenDataError("no token shard files given")
        entries = list(entries) if entries is not None else [None] * len(self.files)
        self._keep_alive = []  # memory maps and record batches that own the viewed buffers
        self._chunks: list[np.ndarray] = []
        self.num_documents = 0
        before = pa.total_allocated_bytes()
        dtype = None
        for path, entry in zip(self.files, entries):
            if entry is not None and "bytes" in entry and path.stat().st_size != int(entry["bytes"]):
                raise TokenDataError(f"{path} has {path.stat().st_size} bytes, the manifest says {entry['bytes']} "
                                     f"(truncated or replaced?): re-run refinery tokenize")
            file_rows, file_tokens = self.num_documents, sum(len(c) for c in self._chunks)
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
                try:
                    batch = reader.get_batch(i)
                except (OSError, pa.ArrowInvalid) as e:
                    raise TokenDataError(f"{path}: record batch {i} is unreadable: {e}") from e
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
            if entry is not None:
                got = (self.num_documents - file_rows, sum(len(c) for c in self._chunks) - file_tokens)
                if got != (int(entry["rows"]), int(entry["tokens"])):
                    raise TokenDataError(f"{path} holds {got[0]} documents / {got[1]} tokens, the manifest says "
                                         f"{entry['rows']} / {entry['tokens']}: the shard does not belong to this "
                                         f"manifest; re-run refinery tokenize")
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
    listed = split_entries(tokens_dir, split, manifest)
    if not listed:
        raise TokenDataError(f"no token shards for split {split!r} under {tokens_dir} "
                             f"(expected {tokens_dir / split}/*.arrow or a list in {MANIFEST})")
    if not any(e is None or e["tokens"] for _, e in listed):
        raise TokenDataError(f"split {split!r} of {tokens_dir} holds no tokens (its {len(listed)} shard(s) are empty)")
    shards = TokenShards([p for p, _ in listed], vocab_size=manifest.get("vocab_size"), eot_id=manifest.get("eot_id"),
                         entries=[e for _, e in listed])
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
        self.n_windows = self._count_windows()
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

    def _count_windows(self) -> int:
        return max(0, (self.shards.total_tokens - 1) // self.block_size)

    def _read_window(self, w: int, out: np.ndarray) -> None:
        self.shards.read(w * self.block_size, self.block_size + 1, out=out)

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
            self._read_window(int(w), buf[row])
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


# ---------------------------------------------------------------------------------------------
# mixtures: several token sets, weighted (model/corridor/mixture.py), as one stream of windows

_SOURCE_SHIFT = 40  # a mixture's window id: source index << 40 | window index inside the source


class TokenMixture:
    """The train (and val) splits of every source of a mixture manifest (``refinery mix``), checked: each
    source's manifest is the one the mixture was planned on, and all share one tokenizer."""

    def __init__(self, path):
        from model.corridor.mixture import check_source_unchanged, read_mixture

        try:
            self.manifest = read_mixture(path)
            self.folders = [check_source_unchanged(self.manifest, s) for s in self.manifest["sources"]]
        except FormatError as e:
            raise TokenDataError(str(e)) from e
        self.path = Path(path)
        self.names = [str(s["name"]) for s in self.manifest["sources"]]
        self.epochs = [float(s["epochs"]) for s in self.manifest["sources"]]
        self.shares = [float(s["share"]) for s in self.manifest["sources"]]
        self.sources = [open_token_split(folder, "train") for folder in self.folders]
        first = self.sources[0]
        for name, src in zip(self.names, self.sources):
            if (src.vocab_size, src.eot_id, src.dtype) != (first.vocab_size, first.eot_id, first.dtype):
                raise TokenDataError(f"mixture source {name!r} has vocab {src.vocab_size} / end-of-text {src.eot_id} "
                                     f"/ {src.dtype}, {self.names[0]!r} has {first.vocab_size} / {first.eot_id} / "
                                     f"{first.dtype}: a mixture needs one tokenizer")
        self.vocab_size, self.eot_id, self.dtype = first.vocab_size, first.eot_id, first.dtype
        self.total_tokens = sum(src.total_tokens for src in self.sources)
        self.num_documents = sum(src.num_documents for src in self.sources)

    def val_splits(self) -> dict:
        """{source name: its val TokenShards} for the sources that have validation tokens."""
        out = {}
        for name, folder in zip(self.names, self.folders):
            try:
                out[name] = open_token_split(folder, "val")
            except TokenDataError:
                continue
        return out

    @property
    def tokenizer_path(self) -> Optional[Path]:
        path = self.folders[0] / "tokenizer.json"
        return path if path.is_file() else None


class MixtureLoader(WindowLoader):
    """``WindowLoader`` over a ``TokenMixture``: windows are cut inside each source exactly as for one token
    set (never across sources), and a mixture epoch takes ``k_s = round(epochs_s x n_s)`` windows of source
    ``s`` (``n_s`` its window count), so the sources' shares of the windows are their shares of the plan.

    Order (deterministic from the seed): source ``s`` is read as consecutive permutations of its windows,
    ``default_rng([seed, 1, s, e]).permutation(n_s)`` for its own epochs e = 0, 1, ... (a source with 3
    epochs is read 3 times, in 3 different orders; its stream continues across mixture epochs, so 1.5 epochs
    per mixture epoch is a whole number of passes every two). Which source fills each slot of a mixture
    epoch is a shuffle of ``k_s`` labels per source, ``default_rng([seed, 0, epoch])``. The rest (rounds,
    ranks, prefetch, state in windows) is WindowLoader's, so resume is exact; the state also names the
    sources and their window counts, and a mixture that changed is refused."""

    def __init__(self, mixture: TokenMixture, block_size: int, batch_size: int, **kwargs):
        if kwargs.pop("shuffle", True) is not True:
            raise UserValueError("a mixture is always read shuffled")
        self.mixture = mixture
        block = int(block_size)
        self.source_windows = [max(0, (src.total_tokens - 1) // block) for src in mixture.sources]
        self.source_take = [int(round(e * n)) for e, n in zip(mixture.epochs, self.source_windows)]
        for name, n, k in zip(mixture.names, self.source_windows, self.source_take):
            if n == 0 or k == 0:
                raise TokenDataError(f"mixture source {name!r} gives {k} windows of {block}+1 tokens per mixture epoch "
                                     f"({n} in the source): too little data for this block size or epochs")
        self._orders: dict = {}
        self._orders_lock = threading.Lock()
        super().__init__(mixture, block_size, batch_size, shuffle=True, **kwargs)

    def _count_windows(self) -> int:
        return sum(self.source_take)

    def _read_window(self, w: int, out: np.ndarray) -> None:
        s, i = w >> _SOURCE_SHIFT, w & ((1 << _SOURCE_SHIFT) - 1)
        self.mixture.sources[s].read(i * self.block_size, self.block_size + 1, out=out)

    def _source_order(self, s: int, start: int, count: int) -> np.ndarray:
        """Windows ``start .. start+count`` of source ``s``'s endless stream of per-epoch permutations."""
        n = self.source_windows[s]
        parts, pos = [], start
        while pos < start + count:
            e, within = divmod(pos, n)
            take = min(n - within, start + count - pos)
            parts.append(np.random.default_rng([self.seed, 1, s, e]).permutation(n)[within:within + take])
            pos += take
        return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)

    def window_order(self, epoch: int) -> np.ndarray:
        """Mixture window ids (``source << 40 | window``) in the order mixture epoch ``epoch`` visits them."""
        with self._orders_lock:  # the prefetch thread and the trainer's accounting both ask
            if epoch not in self._orders:
                labels = np.repeat(np.arange(len(self.source_take), dtype=np.int64), self.source_take)
                labels = labels[np.random.default_rng([self.seed, 0, epoch]).permutation(len(labels))]
                order = np.empty(len(labels), dtype=np.int64)
                for s, k in enumerate(self.source_take):
                    slots = np.flatnonzero(labels == s)
                    order[slots] = (s << _SOURCE_SHIFT) | self._source_order(s, epoch * k, k)
                while len(self._orders) >= 2:
                    self._orders.pop(min(self._orders))
                self._orders[epoch] = order
            return self._orders[epoch]

    def windows_consumed_per_source(self) -> list[int]:
        """Windows handed out so far by all ranks together, per source (from the state: exact on resume)."""
        order = self.window_order(self.epoch)[:self.position]
        counts = np.bincount(order >> _SOURCE_SHIFT, minlength=len(self.source_take))
        return [int(self.epoch * k + c) for k, c in zip(self.source_take, counts)]

    def tokens_per_source(self) -> dict:
        """{source name: tokens trained on so far} (``block_size`` input tokens per window, all ranks)."""
        return {name: n * self.block_size for name, n in zip(self.mixture.names, self.windows_consumed_per_source())}

    def state_dict(self) -> dict:
        state = super().state_dict()
        state["mixture"] = [{"name": n, "n_windows": w, "take": k}
                            for n, w, k in zip(self.mixture.names, self.source_windows, self.source_take)]
        return state

    def load_state_dict(self, state: dict) -> None:
        mine = self.state_dict()["mixture"]
        if state.get("mixture", mine) != mine:
            raise TokenDataError(f"data loader state has mixture {state.get('mixture')}, this loader has {mine}: "
                                 f"the mixture or its token data changed since the checkpoint")
        super().load_state_dict(state)


def open_training_data(path):
    """(train data, {name: val TokenShards}) of a token set folder or of a mixture (file, or folder with
    mixture.json). A token set's val split is named ``""``; it is left out when missing or empty."""
    from model.corridor.mixture import is_mixture

    if is_mixture(path):
        mixture = TokenMixture(path)
        return mixture, mixture.val_splits()
    train = open_token_split(path, "train")
    try:
        return train, {"": open_token_split(path, "val")}
    except TokenDataError:
        return train, {}


def make_window_loader(data, block_size: int, batch_size: int, **kwargs) -> WindowLoader:
    """A MixtureLoader for a TokenMixture, else a WindowLoader."""
    cls = MixtureLoader if isinstance(data, TokenMixture) else WindowLoader
    return cls(data, block_size, batch_size, **kwargs)

