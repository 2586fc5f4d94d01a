"""``refinery train-classifier``: train a fastText quality classifier from positive and negative corpora.

    refinery train-classifier --positive PATH... --negative PATH... --output DIR [--seed N] [...]
    refinery train-classifier --recipe shared --output DIR      # the default recipe on ../shared/data

Inputs (each PATH): a run folder or ``documents/`` folder or ``.arrow`` shard (the ``text`` column), JSONL
(plain or compressed; ``text``, else ``articleBody``), a JSON list/mapping of records (same fields, e.g.
the article benchmark's ``ground-truth.json``), a MediaWiki XML dump (``.xml``/``.xml.bz2``: page texts
with templates, tables, references and link markup stripped), or plain text (``.txt``: paragraphs grouped
into documents of at least 100 words). Empty documents are skipped.

A stratified, seeded ``--holdout`` fraction of each class is held out; the model trains on the rest
(``pipeline/quality/classifier.py``), is written as ``DIR/model.bin`` (fastText's format) and loaded back
through fastText's own predictor to score the held-out documents: precision and recall of the positive
label at probability 0.5 and ROC AUC are printed and written with the data, sizes and parameters to the
model card ``DIR/model.json``. Two trainings are identical (same ``model.bin`` bytes) when they read the
same documents in the same order with the same parameters and seed (training is single-threaded).

The ``shared`` recipe: positives are clean reference text (the article benchmark's ground-truth bodies
and the Wikipedia excerpt in ``../shared/data/text/``), negatives are raw pages: the ``rw_raw`` output
of the shared WARC archives (run into ``DIR/rw_raw`` unless ``--negative`` is given), leaving out the
article benchmark's own pages. It shows the mechanics; real use needs real positives (DCLM's
OpenHermes-2.5 + ELI5 mix, or your own curated set) passed with ``--positive``.
"""

from __future__ import annotations

import bz2
import glob
import gzip
import io
import json
import os
import re
import time
from typing import Dict, Iterator, List, Sequence, Tuple

import numpy as np

from pipeline.errors import UserValueError

POSITIVE, NEGATIVE = "__label__hq", "__label__cc"
SHARED_NEGATIVE_ARCHIVES = ("serp-archive-000*.warc.gz", "web-pages-mixed.warc.gz", "archive-org-2008.warc.gz",
                            "wget-crawl-000*.warc.gz", "cc-main-2020-34-excerpt.warc.gz")


def add_arguments(parser) -> None:
    from pipeline.quality.classifier import TrainParams

    d = TrainParams()
    parser.add_argument("--positive", nargs="+", default=[], metavar="PATH", help="positive (high-quality) corpora")
    parser.add_argument("--negative", nargs="+", default=[], metavar="PATH", help="negative corpora (raw pages)")
    parser.add_argument("--recipe", choices=("shared",), default=None,
                        help="'shared': the default recipe on ../shared/data (see the module doc)")
    parser.add_argument("--output", "-o", required=True, metavar="DIR", help="folder for model.bin and model.json")
    parser.add_argument("--holdout", type=float, default=0.1, help="held-out fraction of each class")
    parser.add_argument("--max-per-class", type=int, default=None, help="use at most N documents of each class")
    parser.add_argument("--limit", type=int, default=None, help="records read by the recipe's rw_raw run")
    for key in ("dim", "epoch", "word_ngrams", "min_count", "bucket", "seed"):
        parser.add_argument("--" + key.replace("_", "-"), type=int, default=getattr(d, key))
    parser.add_argument("--lr", type=float, default=d.lr)


# ----------------------------------------------------------------------------- readers

def _open_text(path: str):
    if path.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8")
    if path.endswith(".bz2"):
        return bz2.open(path, "rt", encoding="utf-8")
    if path.endswith(".zst"):
        import zstandard

        return io.TextIOWrapper(zstandard.ZstdDecompressor().stream_reader(open(path, "rb")), encoding="utf-8")
    return open(path, "r", encoding="utf-8")


def _record_text(rec) -> str:
    if isinstance(rec, str):
        return rec
    if isinstance(rec, dict):
        for key in ("text", "articleBody"):
            if isinstance(rec.get(key), str):
                return rec[key]
    return ""


_WIKI_DROP = [re.compile(p, re.S) for p in (r"<!--.*?-->", r"<ref[^>]*/>", r"<ref.*?</ref>", r"\{\|.*?\|\}")]


def strip_wiki_markup(text: str) -> str:
    """A light clean-up of MediaWiki source: no templates, tables, references, files; links as their text."""
    for pat in _WIKI_DROP:
        text = pat.sub("", text)
    for _ in range(5):  # nested templates, innermost first
        text, n = re.subn(r"\{\{[^{}]*\}\}", "", text)
        if not n:
            break
    text = re.sub(r"\[\[(?:File|Image|Category):[^\]]*\]\]", "", text)
    text = re.sub(r"\[\[(?:[^|\]]*\|)?([^\]]*)\]\]", r"\1", text)
    text = re.sub(r"\[https?://\S+ ([^\]]*)\]", r"\1", text)
    text = re.sub(r"'{2,}", "", text)
    text = re.sub(r"^=+\s*(.*?)\s*=+\s*$", r"\1", text, flags=re.M)
    text = re.sub(r"<[^>]+>", "", text)
    lines = [ln.strip() for ln in text.split("\n")]
    return "\n".join(ln for ln in lines if ln and not ln.startswith(("*", "|", "!", "{", "}", "#"))).strip()


def _mediawiki(path: str) -> Iterator[str]:
    import xml.etree.ElementTree as ET

    with _open_text(path) as fh:
        for _, el in ET.iterparse(fh):
            if el.tag.endswith("}text") or el.tag == "text":
                body = strip_wiki_markup(el.text or "")
                if body and not body.lower().startswith("#redirect"):
                    yield body
                el.clear()


def _plain_text(path: str, min_words: int = 100) -> Iterator[str]:
    with _open_text(path) as fh:
        paragraphs = [p.strip() for p in re.split(r"\n\s*\n", fh.read()) if p.strip()]
    chunk: List[str] = []
    words = 0
    for p in paragraphs:
        chunk.append(p)
        words += len(p.split())
        if words >= min_words:
            yield "\n\n".join(chunk)
            chunk, words = [], 0
    if chunk:
        yield "\n\n".join(chunk)


def _shard_files(path: str) -> List[str]:
    if os.path.isdir(os.path.join(path, "documents")):
        path = os.path.join(path, "documents")
    return sorted(glob.glob(os.path.join(path, "*.arrow")))


def read_corpus(path: str) -> List[str]:
    """The non-empty document texts of one input (formats in the module doc), in file order."""
    from pipeline.io.shards import read_table

    if not os.path.exists(path):
        raise UserValueError(f"train-classifier: input {path!r} does not exist")
    if os.path.isdir(path) or path.endswith(".arrow"):
        files = _shard_files(path) if os.path.isdir(path) else [path]
        if not files:
            raise UserValueError(f"train-classifier: {path!r} holds no .arrow document shards")
        texts = [t for f in files for t in read_table(f, columns=["text"]).column("text").to_pylist()]
    else:
        name = re.sub(r"\.(gz|bz2|zst)$", "", os.path.basename(path))
        if name.endswith(".jsonl"):
            with _open_text(path) as fh:
                texts = [_record_text(json.loads(line)) for line in fh if line.strip()]
        elif name.endswith(".json"):
            with _open_text(path) as fh:
                data = json.load(fh)
            texts = [_record_text(r) for r in (data.values() if isinstance(data, dict) else data)]
        elif name.endswith(".xml"):
            texts = list(_mediawiki(path))
        else:
            texts = list(_plain_text(path))
    return [t for t in texts if isinstance(t, str) and t.strip()]


# ----------------------------------------------------------------------------- metrics

def roc_auc(labels: Sequence[int], scores: Sequence[float]) -> float:
    """Area under the ROC curve (Mann-Whitney U with ties averaged); NaN without both classes."""
    y = np.asarray(labels, dtype=np.int64)
    s = np.asarray(scores, dtype=np.float64)
    npos, nneg = int(y.sum()), int(len(y) - y.sum())
    if not npos or not nneg:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), dtype=np.float64)
    sorted_s = s[order]
    i = 0
    while i < len(s):
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1
        i = j + 1
    return float((ranks[y == 1].sum() - npos * (npos + 1) / 2) / (npos * nneg))


def binary_metrics(labels: Sequence[int], scores: Sequence[float], threshold: float = 0.5) -> Dict[str, float]:
    y = np.asarray(labels, dtype=bool)
    p = np.asarray(scores) >= threshold
    tp, fp, fn = int((y & p).sum()), int((~y & p).sum()), int((y & ~p).sum())
    prec = tp / (tp + fp) if tp + fp else 0.0
    rec = tp / (tp + fn) if tp + fn else 0.0
    return {"threshold": threshold, "precision": round(prec, 4), "recall": round(rec, 4),
            "f1": round(2 * prec * rec / (prec + rec), 4) if prec + rec else 0.0,
            "roc_auc": round(roc_auc(labels, scores), 4), "heldout_positive": int(y.sum()),
            "heldout_negative": int((~y).sum())}


# ----------------------------------------------------------------------------- training

def split_holdout(n: int, fraction: float, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    """(train indices, held-out indices) of ``n`` items, both in input order."""
    perm = rng.permutation(n)
    k = int(round(n * fraction)) if n > 1 else 0
    k = min(max(k, 1 if fraction > 0 and n > 1 else 0), n - 1) if n > 1 else 0
    return np.sort(perm[k:]), np.sort(perm[:k])


def train_classifier(positives: Sequence[str], negatives: Sequence[str], out_dir: str, params, holdout: float = 0.1,
                     sources: Dict[str, List[Dict]] | None = None) -> Dict:
    """Train, write ``model.bin`` and ``model.json`` into ``out_dir``, return the model card."""
    from pipeline.quality import classifier as clf

    if not positives or not negatives:
        raise UserValueError(f"train-classifier needs positive and negative documents (got {len(positives)} positive, "
                             f"{len(negatives)} negative)")
    if not 0 <= holdout < 1:
        raise UserValueError(f"--holdout must be in [0, 1), got {holdout}")
    start = time.time()
    rng = np.random.default_rng(params.seed)
    tr_p, ho_p = split_holdout(len(positives), holdout, rng)
    tr_n, ho_n = split_holdout(len(negatives), holdout, rng)
    examples = [(POSITIVE, positives[i]) for i in tr_p] + [(NEGATIVE, negatives[i]) for i in tr_n]
    model = clf.train(examples, params)
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "model.bin")
    digest = clf.save_model(model, path)
    clf._MODELS.pop(os.path.realpath(path), None)  # a retrained file replaces any cached copy
    ft = clf.load_model(path)
    held = [(1, positives[i]) for i in ho_p] + [(0, negatives[i]) for i in ho_n]
    scores = [clf.score(ft, t, POSITIVE) for _, t in held]
    metrics = binary_metrics([y for y, _ in held], scores) if held else {}
    import dataclasses

    card = {
        "format": "fastText supervised model, .bin format version 12 (loads in fastText and fasttext-predict)",
        "model": "model.bin", "sha256": digest, "bytes": os.path.getsize(path),
        "labels": {"positive": POSITIVE, "negative": NEGATIVE},
        "text_preparation": "carriage returns and newlines replaced by spaces; no lower-casing (classifier.prepare_text)",
        "data": sources or {},
        "sizes": {"train": {"positive": int(len(tr_p)), "negative": int(len(tr_n))},
                  "heldout": {"positive": int(len(ho_p)), "negative": int(len(ho_n))},
                  "vocabulary_words": len(model.dictionary.words)},
        "params": dataclasses.asdict(params), "holdout": holdout,
        "train_loss": round(model.train_loss, 5),
        "metrics": metrics, "seconds": round(time.time() - start, 2),
    }
    from pipeline.io.shards import write_json_atomically

    write_json_atomically(card, os.path.join(out_dir, "model.json"))
    return card


def _recipe_inputs(args) -> Tuple[List[str], List[str]]:
    from pipeline.paths import require_shared

    positives = [str(require_shared("html", "article-extraction-benchmark", "ground-truth.json")),
                 str(require_shared("text", "enwiki-excerpt-206-pages.xml.bz2"))]
    negatives = list(args.negative)
    if not negatives:
        from pipeline.run import run_pipeline

        warc = require_shared("warc")
        inputs = sorted(p for pat in SHARED_NEGATIVE_ARCHIVES for p in glob.glob(str(warc / pat)))
        run_dir = os.path.join(args.output, "rw_raw")
        print(f"[train-classifier] negatives: rw_raw on {len(inputs)} shared archives -> {run_dir}")
        run_pipeline("rw_raw", inputs, run_dir, limit=args.limit, draw=False)
        negatives = [run_dir]
    return positives + list(args.positive), negatives


def run(args) -> Dict:
    from pipeline.quality.classifier import TrainParams

    params = TrainParams(dim=args.dim, epoch=args.epoch, lr=args.lr, word_ngrams=args.word_ngrams,
                         min_count=args.min_count, bucket=args.bucket, seed=args.seed)
    params.validate()
    if args.recipe == "shared":
        pos_paths, neg_paths = _recipe_inputs(args)
    else:
        pos_paths, neg_paths = args.positive, args.negative
        if not pos_paths or not neg_paths:
            raise UserValueError("train-classifier: give --positive and --negative corpora, or --recipe shared")
    sources: Dict[str, List[Dict]] = {"positive": [], "negative": []}
    corpora = {}
    for kind, paths in (("positive", pos_paths), ("negative", neg_paths)):
        texts: List[str] = []
        for p in paths:
            got = read_corpus(p)
            sources[kind].append({"path": os.path.abspath(p), "documents": len(got)})
            texts.extend(got)
        if args.max_per_class:
            texts = texts[:args.max_per_class]
        corpora[kind] = texts
    card = train_classifier(corpora["positive"], corpora["negative"], args.output, params, args.holdout, sources)
    m = card["metrics"]
    print(f"[train-classifier] {card['sizes']['train']['positive']:,} positive / {card['sizes']['train']['negative']:,} "
          f"negative training documents; held out {m.get('heldout_positive', 0)} / {m.get('heldout_negative', 0)}: "
          f"precision {m.get('precision')}, recall {m.get('recall')}, ROC AUC {m.get('roc_auc')} "
          f"-> {os.path.join(args.output, 'model.bin')} ({card['bytes']:,} bytes), model card model.json")
    return card
