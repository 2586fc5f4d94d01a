"""Bits per byte and perplexity of a model on held-out text or token shards.

``bits per byte = total NLL (nats) / (total UTF-8 bytes x ln 2)``: unlike perplexity it does not
depend on the tokenizer, so models with different vocabularies compare.

- ``sliding_window_nll`` scores every token of a long sequence with windows of ``max_length`` tokens
  moved by ``stride``: the first window scores all its tokens, each later one only the ``stride``
  tokens it adds, so every token (but the first ``max_length``) is predicted from at least
  ``max_length - stride`` tokens of context. ``stride = max_length`` (the default) gives disjoint
  windows, as lm-evaluation-harness's rolling log-likelihood does; a smaller stride gives more
  context per token at more compute.
- ``evaluate_text`` / ``evaluate_text_file``: one text (e.g. WikiText-2 raw test; line endings are
  normalised to ``\\n``), prefixed by the end-of-text token so its first token is scored too;
  bytes are the UTF-8 bytes of the text.
- ``evaluate_token_shards``: Arrow IPC files ``DIR/val/*.arrow`` (or ``DIR/*.arrow``) with a
  ``tokens`` column (``large_list<uint16|uint32>``), one document per row. Documents are joined
  into one stream, each preceded by the end-of-text token (unless it already starts with it);
  predictions *of* special tokens (zero bytes) are left out of both the NLL and the token count;
  bytes are the UTF-8 bytes of each document's decoded tokens.

Metrics: ``bpb``, ``bits_per_token``, ``ppl`` (token perplexity = exp(NLL / tokens)), ``tokens``,
``bytes``, ``n`` (documents). They are computed from one record per document (``doc_id``, ``tokens``,
``bytes``, ``nll`` in nats; a WikiText article, or the whole text when it has no WikiText headings, is one
document, and so is a token shard row): total NLL =
``math.fsum`` of the documents' NLLs, tokens and bytes their sums. ``return_details=True`` adds the
records as ``details`` (the lines of ``refinery eval --log-samples``), and they recompute the metrics
exactly (``summarize_documents``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from model.errors import UserValueError
from model.evaluate.scoring import (
    as_text_tokenizer,
    autocast_context,
    model_block_size,
    model_device,
    selected_logits,
)

LN2 = math.log(2.0)


@dataclass
class BPBParams:
    """How bits per byte is measured: window length (None = the model's block size), stride (None =
    the window length, i.e. disjoint windows), windows per forward, and an optional token cap."""

    max_length: int | None = None
    stride: int | None = None
    batch_size: int = 8
    max_tokens: int | None = None
    dtype: str | None = None


def window_spans(n_tokens: int, max_length: int, stride: int) -> list[tuple[int, int, int]]:
    """(begin, end, n_scored) for each window over a sequence of ``n_tokens`` tokens.

    The window's input is ``tokens[begin:end]``, its targets ``tokens[begin+1:end+1]``, of which the
    last ``n_scored`` are scored. Together the windows score targets 1..n_tokens-1 exactly once.
    """
    if max_length < 1:
        raise ValueError(f"max_length must be >= 1, got {max_length}")
    if not 1 <= stride <= max_length:
        raise ValueError(f"stride must be in 1..max_length ({max_length}), got {stride}")
    last = n_tokens - 1  # index of the last target
    spans = []
    prev_end = 0
    end = min(max_length, last)
    while prev_end < last:
        begin = max(0, end - max_length)
        spans.append((begin, end, end - prev_end))
        prev_end = end
        end = min(end + stride, last)
    return spans


@torch.no_grad()
def sliding_window_nll(model, tokens: Sequence[int] | np.ndarray, max_length: int | None = None,
                       stride: int | None = None, batch_size: int = 8, device=None,
                       dtype: str | None = None) -> np.ndarray:
    """Negative log-likelihood (nats, float64) of ``tokens[1:]``, each given the tokens before it
    within its window (see ``window_spans``)."""
    tokens = np.asarray(tokens, dtype=np.int64)
    n = len(tokens)
    if n < 2:
        return np.zeros(0, dtype=np.float64)
    max_length = max_length or model_block_size(model)
    stride = stride or max_length
    device = torch.device(device) if device is not None else model_device(model)
    spans = window_spans(n, max_length, stride)
    nll = np.empty(n - 1, dtype=np.float64)
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(spans), batch_size):
            chunk = spans[start:start + batch_size]
            width = max(end - begin for begin, end, _ in chunk)
            batch = np.zeros((len(chunk), width), dtype=np.int64)
            rows, cols, tgt, dest = [], [], [], []
            for r, (begin, end, n_scored) in enumerate(chunk):
                length = end - begin
                batch[r, :length] = tokens[begin:end]
                cols.extend(range(length - n_scored, length))
                rows.extend([r] * n_scored)
                tgt.extend(tokens[end - n_scored + 1:end + 1].tolist())
                dest.append((end - n_scored, end))  # positions in nll (target index - 1)
            with autocast_context(device, dtype):
                picked = selected_logits(model, torch.from_numpy(batch).to(device),
                                         torch.tensor(rows, device=device), torch.tensor(cols, device=device)).float()
            losses = F.cross_entropy(picked, torch.tensor(tgt, device=device), reduction="none")
            losses = losses.double().cpu().numpy()
            offset = 0
            for lo, hi in dest:
                nll[lo:hi] = losses[offset:offset + hi - lo]
                offset += hi - lo
    finally:
        model.train(was_training)
    return nll


def bits_per_byte(total_nll_nats: float, n_bytes: int) -> float:
    """Total NLL in nats over ``n_bytes`` UTF-8 bytes, in bits per byte."""
    if n_bytes <= 0:
        raise ValueError("cannot compute bits per byte over zero bytes")
    return total_nll_nats / (n_bytes * LN2)


def per_byte_nll(nll: np.ndarray, targets: np.ndarray, byte_lengths: np.ndarray) -> np.ndarray:
    """Each target token's NLL spread evenly over its bytes: one value per byte (special tokens,
    which have no bytes, drop out). Its mean / ln 2 is bits per byte counted byte by byte."""
    lengths = byte_lengths[np.asarray(targets, dtype=np.int64)]
    keep = lengths > 0
    return np.repeat(nll[keep] / lengths[keep], lengths[keep])


def summarize_nll(nll: np.ndarray, targets: np.ndarray, byte_lengths: np.ndarray, n_bytes: int | None,
                  n_docs: int) -> dict:
    """Metrics dict from per-target NLLs; special-token targets (0 bytes) are excluded.

    ``n_bytes`` None counts bytes from the tokens' byte lengths instead of the decoded text.
    """
    lengths = byte_lengths[np.asarray(targets, dtype=np.int64)]
    keep = lengths > 0
    if n_bytes is None:
        n_bytes = int(lengths.sum())
    return metrics_from_totals(float(nll[keep].sum()), int(keep.sum()), int(n_bytes), n_docs)


def metrics_from_totals(total_nll: float, n_tokens: int, n_bytes: int, n_docs: int) -> dict:
    """``bpb``, ``bits_per_token``, ``ppl``, ``tokens``, ``bytes``, ``n`` from totals."""
    if n_tokens == 0:
        raise ValueError("nothing to score: the text has no tokens after the first")
    return {
        "bpb": bits_per_byte(total_nll, n_bytes),
        "bits_per_token": total_nll / (n_tokens * LN2),
        "ppl": math.exp(total_nll / n_tokens),
        "tokens": n_tokens,
        "bytes": int(n_bytes),
        "n": n_docs,
    }


def document_record(doc_id: int, nll: np.ndarray, targets: np.ndarray, byte_lengths: np.ndarray,
                    n_bytes: int, **origin) -> dict:
    """One document's scored tokens (special-token targets left out), bytes and NLL (nats)."""
    keep = byte_lengths[np.asarray(targets, dtype=np.int64)] > 0
    total = float(nll[keep].sum())
    return {"doc_id": doc_id, **origin, "tokens": int(keep.sum()), "bytes": int(n_bytes), "nll": total,
            "bpb": total / (n_bytes * LN2) if n_bytes > 0 else None}


def summarize_documents(records: Sequence[dict]) -> dict:
    """The bits-per-byte metrics of a list of document records (see the module docstring)."""
    return metrics_from_totals(math.fsum(r["nll"] for r in records), sum(r["tokens"] for r in records),
                               sum(r["bytes"] for r in records), len(records))


def read_text_file(path: str | Path) -> str:
    """A UTF-8 text file with line endings normalised to ``\\n``."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"text file for bits-per-byte {path} does not exist")
    return path.read_text(encoding="utf-8")  # universal newlines: \r\n -> \n


WIKITEXT_HEADING = re.compile(r"^ = ([^=\n][^\n]*?) = $", re.M)


def document_starts(text: str) -> tuple[list[int], list[str | None]]:
    """Where the documents of a text begin (character offsets) and their titles.

    WikiText's articles start with a `` = Title = `` line (62 in WikiText-2 raw test, the documents the
    harness's ``wikitext`` task scores); a text without such lines is one document without a title.
    """
    starts, titles = [], []
    for m in WIKITEXT_HEADING.finditer(text):
        starts.append(m.start())
        titles.append(m.group(1).strip())
    if not starts:
        return [0], [None]
    if starts[0] != 0:  # text before the first heading is a document of its own
        starts.insert(0, 0)
        titles.insert(0, None)
    return starts, titles


def evaluate_text(model, tokenizer, text: str, params: BPBParams | None = None, device=None,
                  return_details: bool = False, source: str | None = None) -> dict:
    """Bits per byte and perplexity of ``text`` (see module docstring).

    The text is scored as one stream; each scored token is then credited to the document it starts in
    (``document_starts``), and each document's bytes are the UTF-8 bytes of its stretch of the text (of
    its scored tokens, decoded, when ``max_tokens`` cuts the text or there is no end-of-text token).
    """
    params = params or BPBParams()
    tok = as_text_tokenizer(tokenizer)
    encoding = tok.inner.encode(text, add_special_tokens=False)
    ids = encoding.ids
    prefix = [tok.eot_id] if tok.eot_id is not None else []
    stream = np.asarray(prefix + ids, dtype=np.int64)
    truncated = params.max_tokens is not None and len(stream) > params.max_tokens + 1
    if truncated:
        stream = stream[:params.max_tokens + 1]
    nll = sliding_window_nll(model, stream, params.max_length, params.stride, params.batch_size, device,
                             params.dtype)
    targets = stream[1:]
    # without an end-of-text token the first token has nothing to be predicted from: scoring starts at ids[1]
    first = 0 if prefix else 1
    token_starts = np.asarray([start for start, _ in encoding.offsets], dtype=np.int64)
    starts, titles = document_starts(text)
    doc_of = np.searchsorted(np.asarray(starts), token_starts[first:first + len(targets)], side="right") - 1
    byte_lengths = tok.token_byte_lengths()
    present = [d for d in range(len(starts)) if (doc_of == d).any()]
    records = []
    for k, d in enumerate(present):
        mask = doc_of == d
        if truncated or not prefix:
            n_bytes = len(tok.decode(targets[mask].tolist(), skip_special_tokens=True).encode("utf-8"))
        else:  # the document's stretch of the text: from its first token to the next document's
            lo = 0 if k == 0 else int(token_starts[first + np.argmax(doc_of == d)])
            hi = (int(token_starts[first + np.argmax(doc_of == present[k + 1])]) if k + 1 < len(present)
                  else len(text))
            n_bytes = len(text[lo:hi].encode("utf-8"))
        origin = {} if source is None else {"source": source}
        if titles[d] is not None:
            origin["title"] = titles[d]
        records.append(document_record(k, nll[mask], targets[mask], byte_lengths, n_bytes, **origin))
    if not records:
        raise ValueError("nothing to score: the text has no tokens after the first")
    out = summarize_documents(records)
    if return_details:
        out["details"] = records
    return out


def evaluate_text_file(model, tokenizer, path: str | Path, params: BPBParams | None = None,
                       device=None, return_details: bool = False) -> dict:
    """``evaluate_text`` on a UTF-8 file; adds ``source`` to the metrics."""
    out = evaluate_text(model, tokenizer, read_text_file(path), params, device, return_details, source=str(path))
    out["source"] = str(path)
    return out


def token_shard_files(token_dir: str | Path, split: str = "val") -> list[Path]:
    """The ``.arrow`` files of ``token_dir/split`` (or of ``token_dir`` itself), sorted."""
    root = Path(token_dir)
    folder = root / split if (root / split).is_dir() else root
    files = sorted(folder.glob("*.arrow"))
    if not files:
        raise FileNotFoundError(f"no .arrow token shards in {folder} (expected {root}/{split}/*.arrow)")
    return files


def read_token_documents(files: Sequence[Path], max_tokens: int | None = None,
                         origins: list | None = None) -> list[np.ndarray]:
    """Documents (token arrays) from Arrow IPC token shards, stopping once ``max_tokens`` are read.

    When ``origins`` is a list, one dict per document is appended to it: ``shard`` (file name),
    ``row`` (row in the file) and ``id`` (the row's ``id`` column, when the shard has one).
    """
    import pyarrow as pa
    import pyarrow.ipc as ipc

    docs: list[np.ndarray] = []
    total = 0
    for path in files:
        with pa.memory_map(str(path), "r") as source:
            reader = ipc.open_file(source)
            if "tokens" not in reader.schema.names:
                raise UserValueError(f"{path} has no 'tokens' column (columns: {reader.schema.names})")
            row_base = 0
            for b in range(reader.num_record_batches):
                batch = reader.get_batch(b)
                column = batch.column("tokens")
                ids = (batch.column("id").to_pylist() if origins is not None and "id" in batch.schema.names
                       else None)
                if not (pa.types.is_large_list(column.type) or pa.types.is_list(column.type)):
                    raise UserValueError(f"{path}: 'tokens' must be a list column, got {column.type}")
                values = column.values.to_numpy(zero_copy_only=False)
                offsets = column.offsets.to_numpy()
                valid = column.is_valid().to_numpy(zero_copy_only=False)
                for i in range(len(column)):
                    if not valid[i]:
                        continue
                    doc = np.asarray(values[offsets[i]:offsets[i + 1]], dtype=np.int64)
                    docs.append(doc)
                    if origins is not None:
                        origin = {"shard": path.name, "row": row_base + i}
                        if ids is not None:
                            origin["id"] = ids[i]
                        origins.append(origin)
                    total += len(doc)
                    if max_tokens is not None and total >= max_tokens:
                        return docs
                row_base += len(column)
    return docs


def evaluate_token_shards(model, tokenizer, token_dir: str | Path, params: BPBParams | None = None,
                          device=None, split: str = "val", return_details: bool = False) -> dict:
    """Bits per byte and perplexity on held-out token shards (see module docstring).

    Each document is scored in the joined stream (its first token predicted from the end-of-text
    token before it); its record counts the bytes of its scored tokens, decoded.
    """
    params = params or BPBParams()
    tok = as_text_tokenizer(tokenizer)
    files = token_shard_files(token_dir, split)
    origins: list[dict] = []
    docs = read_token_documents(files, params.max_tokens, origins)
    if not docs:
        raise UserValueError(f"the token shards in {token_dir} hold no documents")
    pieces, spans = [], []  # spans: (begin, end) of each document in the stream, its end-of-text included
    position = 0
    vocab = tok.vocab_size
    for doc in docs:
        if len(doc) and int(doc.max()) >= vocab:
            raise UserValueError(f"token id {int(doc.max())} in {token_dir} is outside the tokenizer's "
                             f"vocabulary ({vocab}): shards and tokenizer do not match")
        begin = position
        if tok.eot_id is not None and (len(doc) == 0 or doc[0] != tok.eot_id):
            pieces.append(np.asarray([tok.eot_id], dtype=np.int64))
            position += 1
        pieces.append(doc)
        position += len(doc)
        spans.append((begin, position))
    stream = np.concatenate(pieces)
    if params.max_tokens is not None:
        stream = stream[:params.max_tokens + 1]
    nll = sliding_window_nll(model, stream, params.max_length, params.stride, params.batch_size, device,
                             params.dtype)
    byte_lengths = tok.token_byte_lengths()
    records = []
    for doc_id, ((begin, end), origin) in enumerate(zip(spans, origins)):
        lo, hi = max(begin, 1), min(end, len(stream))  # stream positions of the document's scored targets
        hi = max(hi, lo)
        scored = stream[lo:hi]
        n_bytes = len(tok.decode(scored.tolist(), skip_special_tokens=True).encode("utf-8"))
        records.append(document_record(doc_id, nll[lo - 1:hi - 1], scored, byte_lengths, n_bytes, **origin))
    out = summarize_documents(records)
    out["source"] = str(files[0].parent)
    if return_details:
        out["details"] = records
    return out
