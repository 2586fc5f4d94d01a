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
  mean per-item log-likelihood).
"""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

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
    """Summed log-likelihood of a continuation, whether greedy decoding yields it, its token count."""

    loglikelihood: float
    is_greedy: bool
    n_tokens: int


@torch.no_grad()
def score_continuations(model, requests: Sequence[tuple[Sequence[int], Sequence[int]]],
                        batch_size: int = 32, max_length: int | None = None, device=None,
                        dtype: str | None = None, pad_id: int = 0) -> list[ContinuationScore]:
    """Score each (context ids, continuation ids) pair; see the module docstring.

    Requests are sorted longest first so that batches pad little, and results come back in the
    input order. Only the continuation positions' logits go through log-softmax (in float32).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    max_length = max_length or model_block_size(model)
    device = torch.device(device) if device is not None else model_device(model)
    prepared = []
    for i, (ctx, cont) in enumerate(requests):
        cont = list(cont)
        if not cont:
            raise ValueError(f"request {i} has an empty continuation")
        if len(cont) > max_length:
            raise ValueError(f"request {i}: continuation of {len(cont)} tokens exceeds the context "
                             f"length {max_length}")
        whole = (list(ctx) + cont)[-(max_length + 1):]
        inp = whole[:-1]
        prepared.append((i, inp, cont))
    order = sorted(range(len(prepared)), key=lambda k: -len(prepared[k][1]))
    results: list[ContinuationScore | None] = [None] * len(prepared)
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(order), batch_size):
            chunk = [prepared[k] for k in order[start:start + batch_size]]
            width = max(len(inp) for _, inp, _ in chunk)
            batch = torch.full((len(chunk), width), pad_id, dtype=torch.long)
            rows, cols, targets, spans = [], [], [], []
            for r, (_, inp, cont) in enumerate(chunk):
                batch[r, :len(inp)] = torch.tensor(inp, dtype=torch.long)
                first = len(inp) - len(cont)
                rows.extend([r] * len(cont))
                cols.extend(range(first, len(inp)))
                targets.extend(cont)
                spans.append(len(cont))
            with autocast_context(device, dtype):
                logits = forward_logits(model, batch.to(device))
            picked = logits[torch.tensor(rows, device=device), torch.tensor(cols, device=device)].float()
            logprobs = F.log_softmax(picked, dim=-1)
            target_t = torch.tensor(targets, device=device)
            token_ll = logprobs.gather(1, target_t[:, None])[:, 0].double().cpu()
            greedy = (logprobs.argmax(dim=-1) == target_t).cpu()
            offset = 0
            for (orig, _, _), n in zip(chunk, spans):
                results[orig] = ContinuationScore(
                    loglikelihood=float(token_ll[offset:offset + n].sum()),
                    is_greedy=bool(greedy[offset:offset + n].all()),
                    n_tokens=n,
                )
                offset += n
    finally:
        model.train(was_training)
    return results  # type: ignore[return-value]


def binomial_stderr(p: float, n: int) -> float:
    """Standard error of an accuracy ``p`` measured on ``n`` items."""
    return math.sqrt(max(p * (1.0 - p), 0.0) / max(n - 1, 1)) if n > 0 else float("nan")


def evaluate_multiple_choice(model, tokenizer, items: Sequence[MultipleChoiceItem], batch_size: int = 32,
                             max_length: int | None = None, device=None, dtype: str | None = None,
                             return_details: bool = False) -> dict:
    """``acc``, ``acc_norm`` (and stderrs), ``chance`` and ``n`` for multiple-choice items."""
    tok = as_text_tokenizer(tokenizer)
    pairs, owners = [], []
    for i, item in enumerate(items):
        for choice in item.choices:
            pairs.append((item.context, item.target_delimiter + choice))
            owners.append(i)
    requests = encode_requests(tok, pairs)
    scores = score_continuations(model, requests, batch_size=batch_size, max_length=max_length,
                                 device=device, dtype=dtype, pad_id=tok.eot_id or 0)
    correct = correct_norm = 0
    chance = 0.0
    details = []
    k = 0
    for item in items:
        lls = np.array([scores[k + j].loglikelihood for j in range(len(item.choices))])
        lengths = np.array([float(len(c)) for c in item.choices])
        k += len(item.choices)
        pred = int(np.argmax(lls))
        pred_norm = int(np.argmax(lls / np.maximum(lengths, 1.0)))
        correct += pred == item.gold
        correct_norm += pred_norm == item.gold
        chance += 1.0 / len(item.choices)
        if return_details:
            details.append({"loglikelihoods": lls.tolist(), "pred": pred, "pred_norm": pred_norm,
                            "gold": item.gold})
    n = len(items)
    acc = correct / n if n else float("nan")
    acc_norm = correct_norm / n if n else float("nan")
    out = {"acc": acc, "acc_stderr": binomial_stderr(acc, n), "acc_norm": acc_norm,
           "acc_norm_stderr": binomial_stderr(acc_norm, n), "chance": chance / n if n else float("nan"),
           "n": n}
    if return_details:
        out["details"] = details
    return out


def evaluate_continuations(model, tokenizer, items: Sequence[ContinuationItem], batch_size: int = 32,
                           max_length: int | None = None, device=None, dtype: str | None = None) -> dict:
    """LAMBADA-style metrics: ``acc`` (greedy reproduces the target), ``ppl`` of the target, ``n``."""
    tok = as_text_tokenizer(tokenizer)
    requests = encode_requests(tok, [(it.context, it.continuation) for it in items])
    scores = score_continuations(model, requests, batch_size=batch_size, max_length=max_length,
                                 device=device, dtype=dtype, pad_id=tok.eot_id or 0)
    n = len(items)
    if n == 0:
        return {"acc": float("nan"), "ppl": float("nan"), "n": 0}
    acc = sum(s.is_greedy for s in scores) / n
    mean_ll = sum(s.loglikelihood for s in scores) / n
    return {"acc": acc, "acc_stderr": binomial_stderr(acc, n), "ppl": math.exp(-mean_ll), "n": n}
