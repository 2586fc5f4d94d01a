"""Benchmark decontamination: an n-gram index of the evaluation sets and its matcher (pure Python + numpy).

What is indexed. By default the sets that ``refinery eval`` scores, read from the same folder
(``$WEBREFINERY_EVAL_DIR``, else ``$WEBREFINERY_DATA/eval``, else ``../shared/data/eval``) and the same
files, formatted exactly as ``model/evaluate/tasks.py`` formats them (``load_eval_items`` mirrors those
loaders: the pipeline wing may not import the model wing, and ``tests/pipeline/quality/test_quality_decontam.py``
checks that both give the same items, so the two cannot drift apart). From each item, the passages are
the prompt's own text without the harness's template words (``Question: ... Answer:``) followed by each
answer choice: ``question + " " + choice`` for ARC and PIQA, ``context + " " + ending`` for HellaSwag,
the whole passage for LAMBADA, and each non-empty line of the WikiText-2 test text.

Normalization (documents and passages alike): the text is lower-cased, then words are the maximal
runs of Unicode letters and digits in it (``[^\\W_]+``, so punctuation, symbols, ``_`` and white space
separate words and vanish). An n-gram is ``n`` consecutive such words (default 13, NeMo Curator's and
lm-eval-harness's size). A passage with fewer than ``n`` words yields no n-gram and therefore cannot
be matched: such items are counted per task in ``DecontamIndex.short_passages`` and listed in the
report, never silently dropped from the count.

Hashes. A word's hash is the first 8 bytes of its BLAKE2b digest (deterministic across processes,
unlike Python's ``hash``); an n-gram's hash is the polynomial ``sum(w[i] * P**(n-1-i)) mod 2**64``.
The index is a sorted ``uint64`` array of distinct n-gram hashes plus a ``uint16`` bit mask of the tasks
each occurs in: about 10 bytes per n-gram (see ``DecontamIndex.nbytes``), a few tens of MB for all
default sets. It is built once per machine and cached as two ``.npy`` files under
``$XDG_CACHE_HOME/webrefinery/decontam/<key>/`` (the key hashes the files' contents, ``n`` and this
format's version), then memory-mapped by every worker process (``np.load(mmap_mode="r")``): no large
Python set is ever pickled with a stage or shipped per bundle. A false match needs a 64-bit collision:
with ~3M indexed n-grams the chance per document n-gram is below 2e-13.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from pipeline.errors import UserError

INDEX_FORMAT = 2
EVAL_DIR_ENV = "WEBREFINERY_EVAL_DIR"
DEFAULT_TASKS = ("hellaswag", "arc_easy", "arc_challenge", "piqa", "lambada", "wikitext")
# The splits and files of each task, relative to the eval folder: every split `refinery eval` can score
# (model/evaluate/tasks.py TASKS[...].splits, and DEFAULT_BPB_TEXT for wikitext); a test compares them.
# ARC is indexed with both its test split (the harness's, scored by default) and its validation split.
TASK_SPLITS: Dict[str, Dict[str, Tuple[str, ...]]] = {
    "hellaswag": {"validation": ("hellaswag_validation.jsonl",)},
    "arc_easy": {"test": ("arc_easy_test.jsonl",), "validation": ("arc_easy_validation.jsonl",)},
    "arc_challenge": {"test": ("arc_challenge_test.jsonl",), "validation": ("arc_challenge_validation.jsonl",)},
    "piqa": {"validation": ("piqa_valid.jsonl", "piqa_valid-labels.lst")},
    "lambada": {"test": ("lambada_openai_test.jsonl",)},
    "wikitext": {"test": ("wikitext-2-raw-test.txt",)},
}
TASK_FILES: Dict[str, Tuple[str, ...]] = {t: tuple(f for files in sp.values() for f in files) for t, sp in TASK_SPLITS.items()}
MAX_TASKS = 16  # bits of the task mask

_WORD = re.compile(r"[^\W_]+")
_P = np.uint64(0x9E3779B97F4A7C15 | 1)


class EvalSetError(UserError, ValueError):
    """An evaluation file for decontamination is missing or malformed (names the file)."""


# ----------------------------------------------------------------------------- eval items (mirror of model/evaluate/tasks.py)


@dataclass(frozen=True)
class EvalItem:
    """One item as ``refinery eval`` formats it (``context``, ``choices``) plus the passages we index."""

    context: str
    choices: Tuple[str, ...]
    passages: Tuple[str, ...]


def eval_dir(data_dir: Optional[str] = None) -> Path:
    """The eval folder: explicit, else $WEBREFINERY_EVAL_DIR, else $WEBREFINERY_DATA/eval, else ../shared/data/eval."""
    if data_dir:
        return Path(data_dir).expanduser()
    if os.environ.get(EVAL_DIR_ENV):
        return Path(os.environ[EVAL_DIR_ENV]).expanduser()
    from pipeline.paths import shared_data_dir

    return shared_data_dir() / "eval"


def _jsonl(path: Path) -> List[dict]:
    if not path.exists():
        raise EvalSetError(f"evaluation file {path} is missing (decontaminate reads the sets `refinery eval` scores; "
                           f"set {EVAL_DIR_ENV} or the stage's 'data_dir')")
    rows = []
    with path.open("r", encoding="utf-8") as fh:
        for no, line in enumerate(fh, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise EvalSetError(f"{path}:{no}: not valid JSON ({exc})") from exc
    return rows


def _hellaswag_clean(text: str) -> str:  # the harness's preprocess (same as model/evaluate/tasks.py)
    text = text.strip().replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ")


def _hellaswag(folder: Path) -> List[EvalItem]:
    items = []
    for row in _jsonl(folder / "hellaswag_validation.jsonl"):
        ctx = row["ctx_a"] + " " + row["ctx_b"].capitalize()
        context = _hellaswag_clean(row["activity_label"] + ": " + ctx)
        choices = tuple(_hellaswag_clean(e) for e in row["endings"])
        body = _hellaswag_clean(ctx)  # without the activity label, which is not part of the source text
        items.append(EvalItem(context, choices, tuple(body + " " + c for c in choices)))
    return items


def _arc(path: Path) -> List[EvalItem]:
    items = []
    for row in _jsonl(path):
        choices = tuple(row["choices"]["text"])
        q = row["question"]
        items.append(EvalItem("Question: " + q + "\nAnswer:", choices, tuple(q + " " + c for c in choices)))
    return items


def _piqa(folder: Path) -> List[EvalItem]:
    items = []
    for row in _jsonl(folder / "piqa_valid.jsonl"):
        choices = (row["sol1"], row["sol2"])
        g = row["goal"]
        items.append(EvalItem("Question: " + g + "\nAnswer:", choices, tuple(g + " " + c for c in choices)))
    return items


def _lambada(folder: Path) -> List[EvalItem]:
    items = []
    for row in _jsonl(folder / "lambada_openai_test.jsonl"):
        words = row["text"].split(" ")
        items.append(EvalItem(" ".join(words[:-1]), (" " + words[-1],), (row["text"],)))
    return items


def _wikitext(folder: Path) -> List[EvalItem]:
    path = folder / "wikitext-2-raw-test.txt"
    if not path.exists():
        raise EvalSetError(f"evaluation file {path} is missing")
    text = path.read_text(encoding="utf-8")  # universal newlines, as model/evaluate/bpb.read_text_file
    return [EvalItem(line, (), (line,)) for line in text.split("\n") if line.strip()]


_LOADERS = {
    "hellaswag": lambda f, split: _hellaswag(f),
    "arc_easy": lambda f, split: _arc(f / TASK_SPLITS["arc_easy"][split][0]),
    "arc_challenge": lambda f, split: _arc(f / TASK_SPLITS["arc_challenge"][split][0]),
    "piqa": lambda f, split: _piqa(f),
    "lambada": lambda f, split: _lambada(f),
    "wikitext": lambda f, split: _wikitext(f),
}


def load_eval_items(task: str, data_dir: Optional[str] = None, split: Optional[str] = None) -> List[EvalItem]:
    """The items of ``task`` (one split, or all its splits in TASK_SPLITS order) as ``refinery eval`` reads
    them, with their decontamination passages."""
    if task not in _LOADERS:
        raise EvalSetError(f"unknown decontamination task {task!r}; known: {', '.join(DEFAULT_TASKS)}")
    splits = [split] if split else list(TASK_SPLITS[task])
    try:
        return [it for sp in splits for it in _LOADERS[task](eval_dir(data_dir), sp)]
    except (KeyError, TypeError, AttributeError) as exc:
        raise EvalSetError(f"task {task!r}: an item in {eval_dir(data_dir)} is malformed ({exc!r})") from exc


# ----------------------------------------------------------------------------- normalization and hashing


def normalized_words(text: str) -> List[str]:
    """The words of ``text`` after lower-casing (see module doc)."""
    return _WORD.findall(text.lower())


def normalized_word_spans(text: str) -> Tuple[List[str], List[Tuple[int, int]]]:
    """The words of ``normalized_words(text)`` and their (start, end) in ``text`` itself."""
    low = text.lower()
    ms = list(_WORD.finditer(low))
    words = [m.group() for m in ms]
    if len(low) == len(text):  # lower() never shrinks a character, so equal length means position for position
        return words, [m.span() for m in ms]
    pos: List[int] = []  # lowered position -> original position (a few characters lower to two or three)
    for i, ch in enumerate(text):
        pos.extend([i] * len(ch.lower()))
    pos.append(len(text))
    return words, [(pos[a], pos[b - 1] + 1) for a, b in (m.span() for m in ms)]


def _word_hash(word: str) -> int:
    return int.from_bytes(hashlib.blake2b(word.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little")


class WordHasher:
    """Word -> 64-bit hash with a bounded per-process cache (deterministic: the cache only saves time)."""

    def __init__(self, max_cache: int = 2_000_000):
        self.cache: Dict[str, int] = {}
        self.max_cache = max_cache

    def hashes(self, words: Sequence[str]) -> np.ndarray:
        cache = self.cache
        if len(cache) > self.max_cache:
            cache.clear()
        try:
            return np.fromiter(map(cache.__getitem__, words), dtype=np.uint64, count=len(words))
        except KeyError:
            for w in words:
                if w not in cache:
                    cache[w] = _word_hash(w)
            return np.fromiter(map(cache.__getitem__, words), dtype=np.uint64, count=len(words))


def ngram_hashes(word_hashes: np.ndarray, n: int) -> np.ndarray:
    """Hash of each run of ``n`` consecutive words (empty when there are fewer than ``n`` words)."""
    m = len(word_hashes) - n + 1
    if m <= 0:
        return np.empty(0, dtype=np.uint64)
    h = np.zeros(m, dtype=np.uint64)
    for i in range(n):
        h = h * _P + word_hashes[i:i + m]
    return h


# ----------------------------------------------------------------------------- the index


@dataclass
class DecontamIndex:
    """Sorted distinct n-gram hashes of the eval passages and, for each, the bit mask of its tasks."""

    n: int
    tasks: Tuple[str, ...]
    hashes: np.ndarray                      # uint64, sorted, distinct
    masks: np.ndarray                       # uint16, bit i = tasks[i]
    ngrams_per_task: Dict[str, int] = field(default_factory=dict)
    items_per_task: Dict[str, int] = field(default_factory=dict)
    short_passages: Dict[str, int] = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        return int(self.hashes.nbytes + self.masks.nbytes)

    def lookup(self, hashes: np.ndarray) -> np.ndarray:
        """Task mask of each hash (0 where it is not an eval n-gram)."""
        if len(hashes) == 0 or len(self.hashes) == 0:
            return np.zeros(len(hashes), dtype=np.uint16)
        pos = np.searchsorted(self.hashes, hashes)
        pos[pos == len(self.hashes)] = 0
        hit = self.hashes[pos] == hashes
        return np.where(hit, self.masks[pos], 0).astype(np.uint16)

    def info(self) -> Dict[str, object]:
        return {"n": self.n, "ngrams": int(len(self.hashes)), "bytes": self.nbytes,
                "ngrams_per_task": dict(self.ngrams_per_task), "items_per_task": dict(self.items_per_task),
                "short_passages_per_task": dict(self.short_passages)}


def build_index(tasks: Sequence[str], n: int, data_dir: Optional[str] = None) -> DecontamIndex:
    """Index the n-grams of every passage of ``tasks`` (no cache; see ``load_index``)."""
    if len(tasks) > MAX_TASKS:
        raise EvalSetError(f"at most {MAX_TASKS} decontamination tasks, got {len(tasks)}")
    hasher = WordHasher()
    all_h, all_m = [], []
    per_task, items, short = {}, {}, {}
    for bit, task in enumerate(tasks):
        chunks, n_short, its = [], 0, load_eval_items(task, data_dir)
        for item in its:
            for passage in item.passages:
                words = normalized_words(passage)
                if len(words) < n:
                    n_short += 1
                    continue
                chunks.append(ngram_hashes(hasher.hashes(words), n))
        uniq = np.unique(np.concatenate(chunks)) if chunks else np.empty(0, dtype=np.uint64)
        per_task[task], items[task], short[task] = int(len(uniq)), len(its), n_short
        all_h.append(uniq)
        all_m.append(np.full(len(uniq), 1 << bit, dtype=np.uint16))
    h = np.concatenate(all_h) if all_h else np.empty(0, dtype=np.uint64)
    m = np.concatenate(all_m) if all_m else np.empty(0, dtype=np.uint16)
    uniq, inverse = np.unique(h, return_inverse=True)
    masks = np.zeros(len(uniq), dtype=np.uint16)
    np.bitwise_or.at(masks, inverse, m)
    return DecontamIndex(n, tuple(tasks), uniq, masks, per_task, items, short)


def _files_key(tasks: Sequence[str], n: int, data_dir: Optional[str]) -> str:
    folder = eval_dir(data_dir)
    digest = hashlib.sha256(f"format={INDEX_FORMAT};n={n};tasks={','.join(tasks)}".encode())
    for task in tasks:
        for name in TASK_FILES[task]:
            path = folder / name
            if not path.exists():
                raise EvalSetError(f"evaluation file {path} is missing (task {task!r})")
            with path.open("rb") as fh:
                while chunk := fh.read(1 << 20):
                    digest.update(chunk)
    return digest.hexdigest()[:24]


def default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "webrefinery" / "decontam"


_INDEXES: Dict[Tuple, DecontamIndex] = {}
_LOCK = threading.Lock()


def load_index(tasks: Sequence[str], n: int, data_dir: Optional[str] = None,
               cache_dir: Optional[str] = None) -> DecontamIndex:
    """The index for ``tasks``/``n``: from this process's memory, else the on-disk cache (memory-mapped),
    else built and cached. Unknown tasks or missing files raise ``EvalSetError``."""
    for t in tasks:
        if t not in TASK_FILES:
            raise EvalSetError(f"unknown decontamination task {t!r}; known: {', '.join(DEFAULT_TASKS)}")
    key = _files_key(tasks, n, data_dir)
    with _LOCK:
        if (key, n) in _INDEXES:
            return _INDEXES[(key, n)]
        folder = Path(cache_dir) if cache_dir else default_cache_dir()
        target = folder / key
        index = None
        if (target / "meta.json").exists():
            try:
                meta = json.loads((target / "meta.json").read_text())
                index = DecontamIndex(n, tuple(tasks), np.load(target / "hashes.npy", mmap_mode="r"),
                                      np.load(target / "masks.npy", mmap_mode="r"), meta["ngrams_per_task"],
                                      meta["items_per_task"], meta["short_passages_per_task"])
            except (OSError, ValueError, KeyError):
                index = None
        if index is None:
            index = build_index(tasks, n, data_dir)
            _write_cache(index, target)
        _INDEXES[(key, n)] = index
        return index


def _write_cache(index: DecontamIndex, target: Path) -> None:
    """Write the index under ``target`` atomically (a temporary folder renamed); failures only cost time."""
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    try:
        tmp.mkdir(parents=True, exist_ok=True)
        np.save(tmp / "hashes.npy", np.ascontiguousarray(index.hashes))
        np.save(tmp / "masks.npy", np.ascontiguousarray(index.masks))
        (tmp / "meta.json").write_text(json.dumps(index.info()))
        os.replace(tmp, target) if not target.exists() else None
    except OSError:
        pass
    finally:
        if tmp.exists():
            for p in tmp.iterdir():
                p.unlink()
            tmp.rmdir()


# ----------------------------------------------------------------------------- matching


@dataclass
class Contamination:
    """Matches of one document: n-grams per task, and the character spans of matched n-grams (merged)."""

    ngrams: Dict[str, int]
    spans: List[Tuple[int, int]]

    @property
    def total(self) -> int:
        return sum(self.ngrams.values())

    def top_task(self, order: Sequence[str]) -> Optional[str]:
        best = [t for t in order if self.ngrams.get(t)]
        return max(best, key=lambda t: (self.ngrams[t], -order.index(t))) if best else None


def find_contamination(text: str, index: DecontamIndex, hasher: WordHasher, want_spans: bool = False) -> Contamination:
    """Which eval n-grams ``text`` contains: matched n-grams per task (an n-gram position counts once for
    each task it belongs to) and, when ``want_spans``, the merged character spans of those n-grams."""
    n = index.n
    words = normalized_words(text)
    if len(words) < n:
        return Contamination({}, [])
    masks = index.lookup(ngram_hashes(hasher.hashes(words), n))
    hit = np.nonzero(masks)[0]
    where: List[Tuple[int, int]] = []
    if want_spans and len(hit):  # positions only for the rare document that matches
        words_again, where = normalized_word_spans(text)
        assert words_again == words
    counts: Dict[str, int] = {}
    if len(hit):
        for bit, task in enumerate(index.tasks):
            c = int(np.count_nonzero(masks[hit] & (1 << bit)))
            if c:
                counts[task] = c
    spans: List[Tuple[int, int]] = []
    if want_spans:
        for j in hit.tolist():
            s, e = where[j][0], where[j + n - 1][1]
            if spans and s <= spans[-1][1]:
                spans[-1] = (spans[-1][0], max(spans[-1][1], e))
            else:
                spans.append((s, e))
    return Contamination(counts, spans)


def cut_spans(text: str, spans: Sequence[Tuple[int, int]], margin: int) -> Tuple[List[str], int]:
    """NeMo Curator's rule: remove each span plus ``margin`` characters on each side (overlapping windows
    merge). Returns (the pieces left, stripped and non-empty, in order; number of removed windows)."""
    windows: List[List[int]] = []
    for s, e in spans:
        s, e = max(0, s - margin), min(len(text), e + margin)
        if windows and s <= windows[-1][1]:
            windows[-1][1] = max(windows[-1][1], e)
        else:
            windows.append([s, e])
    pieces, pos = [], 0
    for s, e in windows:
        pieces.append(text[pos:s])
        pos = e
    pieces.append(text[pos:])
    return [p.strip() for p in pieces if p.strip()], len(windows)
