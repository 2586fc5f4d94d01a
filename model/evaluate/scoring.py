"""Log-likelihood scoring of continuations, the way lm-evaluation-harness does it.

- ``TextTokenizer`` wraps a ``tokenizers`` ``tokenizer.json`` (byte-level BPE with ``<|endoftext|>``):
  plain encode/decode without special tokens added, the end-of-text id, and each token's length in
  UTF-8 bytes (for bits per byte).
- ``encode_context_continuation`` tokenizes a (context, continuation) pair as the harness does:
  trailing spaces of the context move to the continuation, ``context + continuation`` is encoded
  whole and split at the length of the encoded context, so the continuation's tokens are the ones
  the model would really see; an empty context becomes the end-of-text token.
- ``score_continuations`` runs many (context, continuation) token pairs through the model in padded
  batches (one forward per batch, right padding, which a causal model never looks at), keeping only
  the last ``max_length`` tokens of each, and returns for each pair the summed log-likelihood of the
  continuation and whether greedy decoding would have produced it.
- ``evaluate_multiple_choice`` turns those scores into ``acc`` (argmax of the summed log-likelihood)
  and ``acc_norm`` (argmax of the sum divided by the choice's length in characters);
  ``evaluate_continuations`` gives LAMBADA's ``acc`` (greedy match) and ``ppl`` (exp of minus the
  mean per-item log-likelihood). Both count ``windowed`` items (a continuation longer than the model's
  context, scored in several windows; the harness refuses such items) and, with ``return_details``,
  give one record per item (``samples``: the lines of ``refinery eval --log-samples``) from which the
  aggregate metrics recompute exactly.
"""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import torch

from model.evaluate.tasks import ContinuationItem, MultipleChoiceItem

EOT_CANDIDATES = ("<|endoftext|>", "</s>", "<eos>", "<|end_of_text|>")


def bytes_to_unicode_table() -> dict[int, str]:
    """The byte-level BPE alphabet: byte value -> the printable character that stands for it.

    Printable Latin-1 bytes stand for themselves; the other 68 bytes (controls, space, ...) are
    given the characters from U+0100 upward, in byte order (the GPT-2 / ``tokenizers`` ByteLevel
    convention).
    """
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(
        range(ord("®"), ord("ÿ") + 1)
    )
    table = {b: chr(b) for b in keep}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


class TextTokenizer:
    """A ``tokenizers`` tokenizer seen as plain text <-> ids, plus the facts evaluation needs."""

    def __init__(self, tokenizer):
        from tokenizers import Tokenizer

        if isinstance(tokenizer, TextTokenizer):
            tokenizer = tokenizer.inner
        if isinstance(tokenizer, (str, os.PathLike)):
            tokenizer = Tokenizer.from_file(str(tokenizer))
        self.inner = tokenizer
        self.vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
        self.eot_id = None
        for name in EOT_CANDIDATES:
            tid = tokenizer.token_to_id(name)
            if tid is not None:
                self.eot_id = tid
                break
        self._byte_lengths: np.ndarray | None = None

    @property
    def eot_token(self) -> str | None:
        return None if self.eot_id is None else self.inner.id_to_token(self.eot_id)

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` with no special tokens added."""
        return self.inner.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of many texts (the Rust tokenizer batches them in parallel)."""
        return [e.ids for e in self.inner.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        return self.inner.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def special_ids(self) -> set[int]:
        """Ids of the added special tokens (e.g. ``<|endoftext|>``)."""
        return {tid for tid, tok in self.inner.get_added_tokens_decoder().items() if tok.special}

    def token_byte_lengths(self) -> np.ndarray:
        """Length in UTF-8 bytes of every token (0 for special tokens), indexed by id.

        For byte-level BPE each character of a token's string stands for one byte, so the length is
        the number of characters; characters outside the byte alphabet (other tokenizer families)
        fall back to the UTF-8 length of the decoded token.
        """
        if self._byte_lengths is None:
            alphabet = set(bytes_to_unicode_table().values())
            special = self.special_ids()
            lengths = np.zeros(self.vocab_size, dtype=np.int64)
            for tid in range(self.vocab_size):
                if tid in special:
                    continue
                token = self.inner.id_to_token(tid)
                if token is None:
                    continue
                if all(ch in alphabet for ch in token):
                    lengths[tid] = len(token)
                else:
                    lengths[tid] = len(self.decode([tid]).encode("utf-8"))
            self._byte_lengths = lengths
        return self._byte_lengths


def as_text_tokenizer(tokenizer) -> TextTokenizer:
    """A ``TextTokenizer`` from a TextTokenizer, a ``tokenizers.Tokenizer`` or a tokenizer.json path."""
    return tokenizer if isinstance(tokenizer, TextTokenizer) else TextTokenizer(tokenizer)


def model_block_size(model, default: int = 1024) -> int:
    """The model's context length (``model.config.block_size``), else ``default``."""
    config = getattr(model, "config", None)
    value = getattr(config, "block_size", None) or getattr(model, "block_size", None)
    return int(value) if value else default


def model_device(model) -> torch.device:
    """The device of the model's first parameter."""
    return next(model.parameters()).device


def autocast_context(device: torch.device, dtype: str | None):
    """bf16/fp16 autocast on the given device when asked, else a no-op."""
    if dtype in (None, "float32", "fp32"):
        return contextlib.nullcontext()
    torch_dtype = {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float16": torch.float16,
                   "fp16": torch.float16}[dtype]
    return torch.autocast(device_type=device.type, dtype=torch_dtype)


def forward_logits(model, idx: torch.Tensor) -> torch.Tensor:
    """Logits [B, T, V] of the model for ``idx`` (accepts models returning a tuple or a tensor)."""
    out = model(idx)
    if isinstance(out, tuple):
        out = out[0]
    if hasattr(out, "logits"):
        out = out.logits
    return out


def selected_logits(model, idx: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """Logits [N, V] at positions (rows[i], cols[i]) of ``idx`` only.

    With a large vocabulary the full [B, T, V] logits of a batch dwarf everything else (32 x 100 x
    50,257 floats = 640 MB), so for a model whose output layer is ``model.lm_head`` (model/gpt.py) a
    forward pre-hook hands ``lm_head`` just the selected final hidden states. Other models (e.g. a
    transformers one) get the full logits, then the selection.
    """
    head = getattr(model, "lm_head", None)
    if not isinstance(head, torch.nn.Module) or not hasattr(model, "config"):
        return forward_logits(model, idx)[rows, cols]

    def pick(_module, inputs):
        hidden = inputs[0]
        return (hidden[rows, cols],) + tuple(inputs[1:])

    handle = head.register_forward_pre_hook(pick)
    try:
        out = forward_logits(model, idx)
    finally:
        handle.remove()
    if out.dim() != 2 or out.shape[0] != rows.numel():
        raise RuntimeError(f"selected_logits: the model reshaped its logits to {tuple(out.shape)}; "
                           "it no longer applies lm_head last")
    return out


# ----------------------------------------------------------------------------- tokenization


def encode_context_continuation(tokenizer: TextTokenizer, context: str, continuation: str
                                ) -> tuple[list[int], list[int]]:
    """(context ids, continuation ids) the harness way (see module docstring)."""
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces > 0:
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
    if not context:
        if tokenizer.eot_id is None:
            raise ValueError("empty context and the tokenizer has no end-of-text token to stand for it")
        return [tokenizer.eot_id], tokenizer.encode(continuation)
    whole = tokenizer.encode(context + continuation)
    context_ids = tokenizer.encode(context)
    return context_ids, whole[len(context_ids):]


def encode_requests(tokenizer: TextTokenizer, pairs: Sequence[tuple[str, str]]
                    ) -> list[tuple[list[int], list[int]]]:
    """Token pairs for many (context, continuation) strings, using batched encoding."""
    contexts, wholes = [], []
    moved = []
    for context, continuation in pairs:
        n_spaces = len(context) - len(context.rstrip())
        if n_spaces > 0:
            continuation = context[-n_spaces:] + continuation
            context = context[:-n_spaces]
        moved.append((context, continuation))
        contexts.append(context)
        wholes.append(context + continuation)
    ctx_ids = tokenizer.encode_batch(contexts)
    whole_ids = tokenizer.encode_batch(wholes)
    out = []
    for (context, continuation), c_ids, w_ids in zip(moved, ctx_ids, whole_ids):
        if not context:
            if tokenizer.eot_id is None:
                raise ValueError("empty context and the tokenizer has no end-of-text token to stand for it")
            out.append(([tokenizer.eot_id], tokenizer.encode(continuation)))
        else:
            out.append((c_ids, w_ids[len(c_ids):]))
    return out


# ----------------------------------------------------------------------------- scoring


@dataclass(frozen=True)
class ContinuationScore:
    """Summed log-likelihood of a continuation, whether greedy decoding yields it, its token count, and
    the number of model windows it was scored in (more than 1 only when the continuation is longer than
    the model's context)."""

    loglikelihood: float
    is_greedy: bool
    n_tokens: int
    windows: int = 1


def continuation_pieces(context: Sequence[int], continuation: Sequence[int], max_length: int
                        ) -> list[tuple[list[int], list[int]]]:
    """Model inputs that score a continuation: [(input ids, scored target ids)], right to left.

    Normally one piece: the last ``max_length`` tokens before the final one, scoring the whole
    continuation (the context is cut from the left, as the harness does). A continuation longer
    than the window is scored in several windows, each of its tokens given the ``max_length``
    tokens before it at most, so its log-likelihood stays a sum over all of its tokens.
    """
    whole = list(context) + list(continuation)
    first = len(context)  # index in ``whole`` of the first scored token
    pieces = []
    end = len(whole)
    while end > first:
        begin = max(0, end - 1 - max_length)
        lo = max(first, begin + 1)
        pieces.append((whole[begin:end - 1], whole[lo:end]))
        end = lo
    return pieces


@torch.no_grad()
def score_continuations(model, requests: Sequence[tuple[Sequence[int], Sequence[int]]],
                        batch_size: int = 32, max_length: int | None = None, device=None,
                        dtype: str | None = None, pad_id: int = 0) -> list[ContinuationScore]:
    """Score each (context ids, continuation ids) pair; see the module docstring.

    Model inputs are sorted longest first so that batches pad little, and results come back in the
    input order. Only the continuation positions go through the output layer and the softmax.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    max_length = max_length or model_block_size(model)
    device = torch.device(device) if device is not None else model_device(model)
    prepared = []  # (request index, input ids, scored target ids)
    windows = []
    for i, (ctx, cont) in enumerate(requests):
        if len(cont) == 0:
            raise ValueError(f"request {i} has an empty continuation")
        if len(ctx) == 0:
            raise ValueError(f"request {i} has an empty context (use the end-of-text token)")
        pieces = continuation_pieces(ctx, cont, max_length)
        windows.append(len(pieces))
        for inp, targets in pieces:
            prepared.append((i, inp, targets))
    order = sorted(range(len(prepared)), key=lambda k: -len(prepared[k][1]))
    totals = [0.0] * len(requests)
    greedy_all = [True] * len(requests)
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(order), batch_size):
            chunk = [prepared[k] for k in order[start:start + batch_size]]
            width = max(len(inp) for _, inp, _ in chunk)
            batch = torch.full((len(chunk), width), pad_id, dtype=torch.long)
            rows, cols, targets, spans = [], [], [], []
            for r, (_, inp, tgt) in enumerate(chunk):
                batch[r, :len(inp)] = torch.tensor(inp, dtype=torch.long)
                rows.extend([r] * len(tgt))
                cols.extend(range(len(inp) - len(tgt), len(inp)))
                targets.extend(tgt)
                spans.append(len(tgt))
            with autocast_context(device, dtype):
                picked = selected_logits(model, batch.to(device), torch.tensor(rows, device=device),
                                         torch.tensor(cols, device=device)).float()
            target_t = torch.tensor(targets, device=device)
            # log p(target) = logit[target] - logsumexp(logits): no [N, V] log-softmax tensor needed
            token_ll = (picked.gather(1, target_t[:, None])[:, 0] - torch.logsumexp(picked, dim=-1)).double().cpu()
            greedy = (picked.argmax(dim=-1) == target_t).cpu()
            offset = 0
            for (orig, _, _), n in zip(chunk, spans):
                totals[orig] += float(token_ll[offset:offset + n].sum())
                greedy_all[orig] = greedy_all[orig] and bool(greedy[offset:offset + n].all())
                offset += n
    finally:
        model.train(was_training)
    return [ContinuationScore(loglikelihood=totals[i], is_greedy=greedy_all[i], n_tokens=len(cont),
                              windows=windows[i])
            for i, (_, cont) in enumerate(requests)]


def binomial_stderr(p: float, n: int) -> float:
    """Standard error of an accuracy ``p`` measured on ``n`` items."""
    return math.sqrt(max(p * (1.0 - p), 0.0) / max(n - 1, 1)) if n > 0 else float("nan")


def evaluate_multiple_choice(model, tokenizer, items: Sequence[MultipleChoiceItem], batch_size: int = 32,
                             max_length: int | None = None, device=None, dtype: str | None = None,
                             return_details: bool = False) -> dict:
    """``acc``, ``acc_norm`` (and stderrs), ``chance``, ``windowed`` and ``n`` for multiple-choice items.

    With ``return_details`` the result also holds ``details``: one record per item, in order (see
    ``multiple_choice_record``).
    """
    tok = as_text_tokenizer(tokenizer)
    pairs = []
    for item in items:
        for choice in item.choices:
            pairs.append((item.context, item.target_delimiter + choice))
    requests = encode_requests(tok, pairs)
    scores = score_continuations(model, requests, batch_size=batch_size, max_length=max_length,
                                 device=device, dtype=dtype, pad_id=tok.eot_id or 0)
    correct = correct_norm = windowed = 0
    chance = 0.0
    details = []
    k = 0
    for doc_id, item in enumerate(items):
        item_scores = scores[k:k + len(item.choices)]
        k += len(item.choices)
        record = multiple_choice_record(doc_id, item, item_scores)
        correct += record["acc"] == 1.0
        correct_norm += record["acc_norm"] == 1.0
        windowed += record["windowed"]
        chance += 1.0 / len(item.choices)
        if return_details:
            details.append(record)
    n = len(items)
    acc = correct / n if n else float("nan")
    acc_norm = correct_norm / n if n else float("nan")
    out = {"acc": acc, "acc_stderr": binomial_stderr(acc, n), "acc_norm": acc_norm,
           "acc_norm_stderr": binomial_stderr(acc_norm, n), "chance": chance / n if n else float("nan"),
           "windowed": windowed, "n": n}
    if return_details:
        out["details"] = details
    return out


def multiple_choice_record(doc_id: int, item: MultipleChoiceItem, scores: Sequence[ContinuationScore]) -> dict:
    """One multiple-choice item as scored: the fields of a ``--log-samples`` line.

    ``pred`` is the argmax of the summed log-likelihoods (``acc``), ``pred_norm`` the argmax of the
    sums divided by each choice's length in characters (``acc_norm``); ties go to the first choice,
    as with the harness's ``np.argmax``. ``windowed`` is true when any choice was longer than the
    model's context.
    """
    lls = np.array([s.loglikelihood for s in scores])
    lengths = np.array([float(len(c)) for c in item.choices])
    pred = int(np.argmax(lls))
    pred_norm = int(np.argmax(lls / np.maximum(lengths, 1.0)))
    return {
        "doc_id": doc_id,
        "source_id": item.source_id,
        "context": item.context,
        "target_delimiter": item.target_delimiter,
        "choices": list(item.choices),
        "gold": item.gold,
        "loglikelihoods": lls.tolist(),
        "n_tokens": [s.n_tokens for s in scores],
        "n_chars": [len(c) for c in item.choices],
        "is_greedy": [s.is_greedy for s in scores],
        "pred": pred,
        "pred_norm": pred_norm,
        "acc": 1.0 if pred == item.gold else 0.0,
        "acc_norm": 1.0 if pred_norm == item.gold else 0.0,
        "windowed": any(s.windows > 1 for s in scores),
    }


def continuation_record(doc_id: int, item: ContinuationItem, score: ContinuationScore) -> dict:
    """One continuation item (LAMBADA) as scored: the fields of a ``--log-samples`` line."""
    return {
        "doc_id": doc_id,
        "source_id": item.source_id,
        "context": item.context,
        "target": item.continuation,
        "loglikelihood": score.loglikelihood,
        "n_tokens": score.n_tokens,
        "is_greedy": score.is_greedy,
        "acc": 1.0 if score.is_greedy else 0.0,
        "windowed": score.windows > 1,
    }


def evaluate_continuations(model, tokenizer, items: Sequence[ContinuationItem], batch_size: int = 32,
                           max_length: int | None = None, device=None, dtype: str | None = None,
                           return_details: bool = False) -> dict:
    """LAMBADA-style metrics: ``acc`` (greedy reproduces the target), ``ppl`` of the target, ``windowed``,
    ``n``; ``details`` (one ``continuation_record`` per item) with ``return_details``."""
    tok = as_text_tokenizer(tokenizer)
    requests = encode_requests(tok, [(it.context, it.continuation) for it in items])
    scores = score_continuations(model, requests, batch_size=batch_size, max_length=max_length,
                                 device=device, dtype=dtype, pad_id=tok.eot_id or 0)
    n = len(items)
    if n == 0:
        return {"acc": float("nan"), "ppl": float("nan"), "windowed": 0, "n": 0}
    records = [continuation_record(i, item, score) for i, (item, score) in enumerate(zip(items, scores))]
    acc = sum(r["acc"] == 1.0 for r in records) / n
    mean_ll = sum(r["loglikelihood"] for r in records) / n
    out = {"acc": acc, "acc_stderr": binomial_stderr(acc, n), "ppl": math.exp(-mean_ll),
           "windowed": sum(r["windowed"] for r in records), "n": n}
    if return_details:
        out["details"] = records
    return out
