"""Labelled data for fine-tuning: the named tasks (SST-2, WNUT-17) and a user's own JSONL or CoNLL files.

A task is ``sst2``, ``wnut17``, ``jsonl:PATH`` or ``conll:PATH``. ``PATH`` is ``TRAIN,DEV`` (two files) or one
file, in which case a seeded 10% of it is held out as dev. JSONL rows are ``{"text": ..., "label": ...}``
(sentence classification) or ``{"tokens": [...], "tags": [...]}`` (token classification); CoNLL files
hold ``token ... tag`` per line (the tag is the last column) and a blank line between sentences, with
BIO tags. The label set is inferred from the training file (sorted) and checked: at least two labels,
every row labelled, every dev label seen in training, BIO tags well formed.

Encoding: a sentence becomes its token ids (no special tokens), cut to ``max_length``. For token
classification each word is encoded on its own (with a leading space after the first word, as
byte-level BPE sees running text); the word's label goes on its first sub-word (``subword="first"``,
BERT's convention and the default), the other sub-words get -100 (ignored by the loss and the
scorer). ``subword="last"`` labels the last sub-word instead: in a causal model that is the first
position that has seen the whole word (the first sub-word sees only the word's first piece and what
came before). Words cut off by ``max_length`` are predicted ``O``.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from model.errors import UserValueError

IGNORE_INDEX = -100
NAMED_TASKS = ("sst2", "wnut17")
DEV_FRACTION = 0.1  # held out of a single user file


@dataclass
class TaskData:
    """A labelled task: ``kind`` is ``sequence`` (examples (text, label id)) or ``token`` (examples
    (words, tag ids))."""

    name: str
    kind: str
    labels: list[str]
    train: list = field(default_factory=list)
    dev: list = field(default_factory=list)

    @property
    def label2id(self) -> dict[str, int]:
        return {l: i for i, l in enumerate(self.labels)}


def finetune_data_dir(data_dir=None) -> Path:
    """The folder holding ``sst2/`` and ``wnut17/``: ``data_dir``, else $WEBREFINERY_DATA/finetune, else
    ``../shared/data/finetune`` beside the repository."""
    if data_dir:
        return Path(data_dir)
    root = os.environ.get("WEBREFINERY_DATA")
    if root:
        return Path(root) / "finetune"
    return Path(__file__).resolve().parents[3] / "shared" / "data" / "finetune"


def _need(path: Path) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"fine-tuning data file {path} not found (set WEBREFINERY_DATA or --data-dir)")
    return path


# ---------------------------------------------------------------------------------------------- readers


def read_tsv_classification(path: Path) -> list[tuple[str, str]]:
    """GLUE-style TSV with a header ``sentence<TAB>label``."""
    rows = []
    with open(_need(path), encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader, None)
        if not header or "sentence" not in header or "label" not in header:
            raise UserValueError(f"{path}: expected a header with 'sentence' and 'label' columns, got {header}")
        s_col, l_col = header.index("sentence"), header.index("label")
        for n, row in enumerate(reader, start=2):
            if len(row) <= max(s_col, l_col) or not row[l_col].strip():
                raise UserValueError(f"{path}:{n}: row has no label")
            rows.append((row[s_col].strip(), row[l_col].strip()))
    return rows


def read_conll(path: Path) -> list[tuple[list[str], list[str]]]:
    """Sentences of (words, tags) from a CoNLL file (tag = last column, blank line between sentences)."""
    sentences, words, tags = [], [], []
    with open(_need(path), encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            line = line.rstrip("\n").rstrip("\r")
            if not line.strip():
                if words:
                    sentences.append((words, tags))
                    words, tags = [], []
                continue
            if line.startswith("-DOCSTART-"):
                continue
            parts = line.split("\t") if "\t" in line else line.split()
            if len(parts) < 2 or not parts[-1].strip():
                raise UserValueError(f"{path}:{n}: a CoNLL line needs a token and a tag (last column); "
                                     f"got {line[:60]!r}: is this a file without labels?")
            words.append(parts[0])
            tags.append(parts[-1].strip())
    if words:
        sentences.append((words, tags))
    if not sentences:
        raise UserValueError(f"{path}: no sentences")
    return sentences


def read_jsonl(path: Path) -> tuple[str, list]:
    """(kind, rows) from a JSONL file of {"text", "label"} or {"tokens", "tags"} objects."""
    rows, kind = [], None
    with open(_need(path), encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise UserValueError(f"{path}:{n}: not valid JSON ({e})") from e
            if not isinstance(obj, dict):
                raise UserValueError(f"{path}:{n}: expected a JSON object")
            row_kind = "token" if "tokens" in obj else "sequence"
            kind = kind or row_kind
            if row_kind != kind:
                raise UserValueError(f"{path}:{n}: mixes sentence rows (text/label) and token rows (tokens/tags)")
            if kind == "sequence":
                if "text" not in obj:
                    raise UserValueError(f"{path}:{n}: a row needs 'text' and 'label' (or 'tokens' and 'tags')")
                if obj.get("label") is None or obj.get("label") == "":
                    raise UserValueError(f"{path}:{n}: row has no 'label': a fine-tuning file needs labels")
                rows.append((str(obj["text"]), str(obj["label"])))
            else:
                toks, tags = obj.get("tokens"), obj.get("tags")
                if tags is None:
                    raise UserValueError(f"{path}:{n}: row has 'tokens' but no 'tags': a fine-tuning file needs labels")
                if not isinstance(toks, list) or not isinstance(tags, list) or len(toks) != len(tags) or not toks:
                    raise UserValueError(f"{path}:{n}: 'tokens' and 'tags' must be non-empty lists of equal length")
                rows.append(([str(t) for t in toks], [str(t) for t in tags]))
    if not rows:
        raise UserValueError(f"{path}: no rows")
    return kind, rows


# ---------------------------------------------------------------------------------------------- labels


def _sorted_labels(values) -> list[str]:
    values = sorted(set(values))
    try:
        return sorted(values, key=lambda v: float(v))
    except ValueError:
        return values


def _check_bio(tags: list[str], where: str) -> None:
    bad = sorted({t for t in tags if not (t == "O" or (t[:2] in ("B-", "I-") and len(t) > 2))})
    if bad:
        raise UserValueError(f"{where}: tags must be BIO (O, B-TYPE, I-TYPE); found {bad[:5]}")


def build_task(name: str, kind: str, train_rows: list, dev_rows: list, source: str) -> TaskData:
    """Infer and validate the label set, then map labels to ids."""
    if kind == "sequence":
        train_labels = [l for _, l in train_rows]
        dev_labels = [l for _, l in dev_rows]
    else:
        train_labels = [t for _, tags in train_rows for t in tags]
        dev_labels = [t for _, tags in dev_rows for t in tags]
        _check_bio(train_labels + dev_labels, source)
    labels = _sorted_labels(train_labels)
    if kind == "token" and "O" in labels:  # O first: id 0, the "nothing here" class
        labels = ["O"] + [l for l in labels if l != "O"]
    if len(labels) < 2:
        raise UserValueError(f"{source}: found {len(labels)} distinct label(s) {labels}; classification needs at least 2")
    unseen = sorted(set(dev_labels) - set(labels))
    if unseen:
        raise UserValueError(f"{source}: dev labels {unseen[:5]} never occur in the training data")
    ids = {l: i for i, l in enumerate(labels)}
    if kind == "sequence":
        train = [(t, ids[l]) for t, l in train_rows]
        dev = [(t, ids[l]) for t, l in dev_rows]
    else:
        train = [(w, [ids[t] for t in tags]) for w, tags in train_rows]
        dev = [(w, [ids[t] for t in tags]) for w, tags in dev_rows]
    return TaskData(name=name, kind=kind, labels=labels, train=train, dev=dev)


def _split(rows: list, seed: int) -> tuple[list, list]:
    order = np.random.default_rng([seed, 2024]).permutation(len(rows))
    n_dev = max(1, int(round(DEV_FRACTION * len(rows))))
    if len(rows) - n_dev < 1:
        raise UserValueError("need at least 2 labelled rows to hold some out as dev")
    dev_idx = set(order[:n_dev].tolist())
    return [r for i, r in enumerate(rows) if i not in dev_idx], [r for i, r in enumerate(rows) if i in dev_idx]


def load_task(spec: str, data_dir=None, seed: int = 0) -> TaskData:
    """``sst2`` | ``wnut17`` | ``jsonl:TRAIN[,DEV]`` | ``conll:TRAIN[,DEV]`` -> TaskData."""
    if spec == "sst2":
        root = finetune_data_dir(data_dir) / "sst2"
        return build_task("sst2", "sequence", read_tsv_classification(root / "train.tsv"),
                          read_tsv_classification(root / "dev.tsv"), str(root))
    if spec == "wnut17":
        root = finetune_data_dir(data_dir) / "wnut17"
        return build_task("wnut17", "token", read_conll(root / "wnut17train.conll"),
                          read_conll(root / "emerging.dev.conll"), str(root))
    fmt, sep, paths = spec.partition(":")
    if not sep or fmt not in ("jsonl", "conll") or not paths:
        raise UserValueError(f"unknown task {spec!r}: use one of {', '.join(NAMED_TASKS)}, jsonl:PATH or conll:PATH "
                             "(PATH = TRAIN or TRAIN,DEV)")
    files = [Path(p) for p in paths.split(",") if p]
    if len(files) > 2:
        raise UserValueError(f"task {spec!r}: give TRAIN or TRAIN,DEV, not {len(files)} files")
    if fmt == "conll":
        kind, train_rows = "token", read_conll(files[0])
        dev_rows = read_conll(files[1]) if len(files) == 2 else None
    else:
        kind, train_rows = read_jsonl(files[0])
        dev_rows = None
        if len(files) == 2:
            dev_kind, dev_rows = read_jsonl(files[1])
            if dev_kind != kind:
                raise UserValueError(f"{files[1]}: dev rows are {dev_kind} rows but training rows are {kind} rows")
    if dev_rows is None:
        train_rows, dev_rows = _split(train_rows, seed)
    return build_task(spec, kind, train_rows, dev_rows, str(files[0]))


# ---------------------------------------------------------------------------------------------- encoding


@dataclass
class Encoded:
    """One example as model inputs: ids and per-position labels (token task) or one label (sequence)."""

    ids: list[int]
    label: object  # int (sequence) or list[int] aligned with ids, -100 on non-first sub-words (token)
    n_words: int = 0  # token task: words in the example (some may be cut off)


SUBWORDS = ("first", "last")


def encode_examples(task: TaskData, tokenizer, max_length: int, split: str, subword: str = "first") -> list[Encoded]:
    """Encode ``task.train`` or ``task.dev`` with a ``tokenizers.Tokenizer``."""
    rows = task.train if split == "train" else task.dev
    if subword not in SUBWORDS:
        raise UserValueError(f"subword must be one of {SUBWORDS}, got {subword!r}")
    out = []
    if task.kind == "sequence":
        encs = tokenizer.encode_batch([t for t, _ in rows], add_special_tokens=False)
        for (_, label), enc in zip(rows, encs):
            ids = enc.ids[:max_length] or [0]
            out.append(Encoded(ids=ids, label=int(label)))
        return out
    for words, tags in rows:
        pieces = tokenizer.encode_batch([w if i == 0 else " " + w for i, w in enumerate(words)], add_special_tokens=False)
        ids, labels = [], []
        for enc, tag in zip(pieces, tags):
            sub = enc.ids or [0]
            if len(ids) + 1 > max_length:
                break
            sub = sub[: max_length - len(ids)]
            ids.extend(sub)
            rest = [IGNORE_INDEX] * (len(sub) - 1)
            labels.extend([int(tag)] + rest if subword == "first" else rest + [int(tag)])
        out.append(Encoded(ids=ids or [0], label=labels or [IGNORE_INDEX], n_words=len(words)))
    return out
