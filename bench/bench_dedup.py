"""End-to-end dedup benchmark on a synthetic corpus of near-duplicates built from real text.

Corpus (``--docs N``): "original" pages are random samples of 8-30 real sentences from the shared
Common Crawl extract (so two originals share almost no 5-gram); a fraction (``--dup-fraction``)
are copies of an earlier page (original or copy: chains happen) with 0-2.5% of words substituted
(Jaccard ~0.8-1), some with only case/punctuation changed (exact-dedup material), some re-crawled
under the same URL. The truth (which pages descend from which original) is known. The corpus is
built in a child process and written as JSON lines (``--corpus-dir`` keeps it for later runs), so
neither its building nor an in-memory ``Create`` counts in the pipeline's time and memory.

Pipeline (Beam, in-process FnApiRunner; ``--workers N`` for multi_processing): ReadFromText ->
json.loads -> exact_dedup -> url_dedup -> minhash_dedup (``--preset``) [-> substring_dedup with
``--substring``]. ``--design fused`` (the default, what ``refinery run`` builds) runs the three as one
``pipeline.dedup.fused.FusedDedup`` (documents shuffled once); ``--design chained`` as three transforms,
each shuffling the documents (the design before); ``--design both`` runs both, one after the other, each
in its own forked child on the same corpus file.

Prints wall time of the pipeline run, peak memory (the driver's high-water mark VmHWM, which is
the whole run with one worker; and the sum over the driver and its worker processes sampled every
0.2 s), connected-components rounds needed, per-stage counts, and quality against the truth: clusters
left with exactly one page (perfect), with several (missed duplicates), with none (over-merged:
pages of different originals merged, an LSH false positive chain).

``--baseline`` also runs ``plain_dedup``: the same exact_dedup -> url_dedup -> minhash_dedup as a plain
single-process loop (the stages' own key, priority, MinHash and band functions per document; buckets
grouped with a numpy sort per band, star edges, union-find), in a forked child on the same corpus file,
reading and writing the same things as the pipeline. It prints both wall and CPU times, Beam / loop,
both peak RSS (each process's VmHWM reset at its start), and whether both kept exactly the same
documents and rejected the others for the same reasons (exit status 1 when not).

    .venv/bin/python bench/bench_dedup.py --docs 10000 [--preset refinedweb] [--workers 2] [--substring]
        [--corpus-dir /tmp/dedup-corpus] [--trace rss.csv] [--baseline] [--design fused|chained|both]
"""

from __future__ import annotations

import argparse
import gc
import gzip
import json
import multiprocessing
import os
import random
import re
import resource
import sys
import tempfile
import threading
import time
from collections import Counter

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import apache_beam as beam  # noqa: E402
import numpy as np  # noqa: E402

from pipeline import runtime  # noqa: E402
from pipeline.dedup.exact import TextKey, UrlKey, key_of_bytes  # noqa: E402
from pipeline.dedup.local import dedup_metrics  # noqa: E402
from pipeline.dedup.keys import node_id, priority_of  # noqa: E402
from pipeline.dedup.minhash.hashing import MinHasher, band_hashes, jaccard_of_hash_sets  # noqa: E402
from pipeline.dedup.minhash.transform import CLUSTER_COLUMN, SIZE_COLUMN  # noqa: E402
from pipeline.dedup.stages import (  # noqa: E402
    ExactDedupParams, ExactDedupStage, MinhashDedupParams, MinhashDedupStage, SubstringDedupParams,
    SubstringDedupStage, UrlDedupParams, UrlDedupStage, fusable,
)
from pipeline.document import doc_key, make_document, text_of  # noqa: E402
from pipeline.stages.base import error_reason, reason  # noqa: E402

DATA = os.environ.get("WEBREFINERY_DATA", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data"))
_SENT = re.compile(r"(?<=[.!?])\s+|\n+")


def run_in_child(target, args, what: str) -> None:
    """Run ``target(*args)`` in a forked child (its memory stays out of this process's peak RSS)."""
    child = multiprocessing.get_context("fork").Process(target=target, args=args)
    child.start()
    child.join()
    if child.exitcode != 0:
        raise SystemExit(f"{what} failed (exit code {child.exitcode})")


def real_sentences():
    path = os.path.join(DATA, "cc", "cc-main-2019-30-extracted.jsonl.gz")
    if not os.path.exists(path):
        raise SystemExit(f"missing {path}: set WEBREFINERY_DATA to the shared data folder")
    pool = set()
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            for s in _SENT.split(json.loads(line)["text"]):
                if 6 <= len(s.split()) <= 60:
                    pool.add(s.strip())
    return sorted(pool)


def build_corpus(n: int, dup_fraction: float, seed: int):
    """(docs, truth: doc id -> original index)."""
    rng = random.Random(seed)
    pool = real_sentences()
    letters = "bcdfghjklmnpqrstvwxz"
    docs, truth = [], {}
    for i in range(n):
        if i == 0 or rng.random() >= dup_fraction:
            text = " ".join(rng.sample(pool, rng.randint(8, 30)))
            origin, url = i, f"http://site{i % 997}.example/page/{i}"
        else:
            parent = docs[rng.randrange(len(docs))]
            origin = truth[parent["id"]]
            kind = rng.random()
            words = parent["text"].split(" ")
            if kind < 0.15:  # same text, other case and punctuation: exact dedup material
                text = " ".join(words).upper().replace(".", " !")
            else:
                rate = rng.uniform(0.0, 0.025)
                for _ in range(max(1, round(rate * len(words)))):
                    words[rng.randrange(len(words))] = "".join(rng.choice(letters) for _ in range(rng.randint(3, 9)))
                text = " ".join(words)
            url = parent["url"] if kind > 0.9 else f"http://mirror{i % 101}.example/copy/{i}"
        doc = make_document(id=f"syn-{i}", text=text, url=url, source="synthetic", record_offset=i,
                            warc_date=f"2023-{1 + i % 12:02d}-{1 + i % 28:02d}T00:00:00Z")
        docs.append(doc)
        truth[doc["id"]] = origin
    return docs, truth


def write_corpus(path: str, n: int, dup_fraction: float, seed: int) -> None:
    """Build the corpus and write it as JSON lines to ``path`` (+ ``path.truth.npy``: origin per doc index)."""
    docs, truth = build_corpus(n, dup_fraction, seed)
    with open(path + ".tmp", "w", encoding="utf-8") as fh:
        for doc in docs:
            fh.write(json.dumps(doc) + "\n")
    origins = np.array([truth[d["id"]] for d in docs], dtype=np.int64)
    np.save(path + ".truth.npy", origins)
    with open(path + ".meta.json", "w") as fh:
        json.dump({"docs": n, "dup_fraction": dup_fraction, "seed": seed,
                   "words": sum(len(d["text"].split()) for d in docs)}, fh)
    os.replace(path + ".tmp", path)


def corpus_file(folder: str, n: int, dup_fraction: float, seed: int):
    """(path of the corpus JSONL, words/doc, origins array), building it in a child process when missing.

    The child keeps the corpus-building memory (all texts at once) out of this process's peak RSS."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"corpus-{n}-{dup_fraction}-{seed}.jsonl")
    meta = path + ".meta.json"
    if not (os.path.exists(path) and os.path.exists(meta)):
        run_in_child(write_corpus, (path, n, dup_fraction, seed), "building the corpus")
    with open(meta) as fh:
        info = json.load(fh)
    return path, info["words"] / n, np.load(path + ".truth.npy")


def _descendants(pid: int):
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as fh:
                    kids = [int(x) for x in fh.read().split()]
                out += kids
                todo += kids
        except OSError:
            continue
    return out


def _rss_mib(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return 0.0


class RssSampler(threading.Thread):
    """Samples the RSS of this process and all its descendants (Beam workers) every ``period`` seconds."""

    def __init__(self, period: float = 0.2):
        super().__init__(daemon=True)
        self.period, self.stop, self.peak_total, self.peak_worker = period, threading.Event(), 0.0, 0.0
        self.trace = []  # (seconds since start, total MiB)

    def run(self):
        me, t0 = os.getpid(), time.perf_counter()
        while not self.stop.is_set():
            workers = [_rss_mib(p) for p in _descendants(me)]
            total = _rss_mib(me) + sum(workers)
            self.peak_total = max(self.peak_total, total)
            self.peak_worker = max([self.peak_worker] + workers)
            self.trace.append((time.perf_counter() - t0, total))
            self.stop.wait(self.period)


# ---------------------------------------------------------------------------------------------
# --baseline: the same three stages as a plain single-process loop (no Beam)
# ---------------------------------------------------------------------------------------------


def _plain_group_dedup(docs, stage: str, key_fn, keep: str, rejected: list) -> list:
    """``exact.GroupDedup`` without Beam: one document kept per group key (smallest ``priority_of``; the
    first seen on a tie, as ``_KeepOneDoFn``), the others rejected ``<stage>:duplicate``; grouped documents
    get ``<stage>_group_size``; a None key is kept ungrouped; a key function that raises is a dead letter."""
    kept, groups = [], {}  # key -> [best priority, best doc, members]
    for doc in docs:
        try:
            key = key_fn(doc)
            priority = None if key is None else priority_of(doc, keep)
        except Exception as exc:
            rejected.append((doc, error_reason(stage, exc)))
            continue
        if key is None:
            kept.append(doc)
            continue
        group = groups.get(key)
        if group is None:
            groups[key] = [priority, doc, [doc]]
        else:
            group[2].append(doc)
            if priority < group[0]:
                group[0], group[1] = priority, doc
    why, column = reason(stage, "duplicate"), f"{stage}_group_size"
    for _, best, members in groups.values():
        for doc in members:
            doc[column] = len(members)
            if doc is best:
                kept.append(doc)
            else:
                rejected.append((doc, why))
    return kept


class _SharedWords:
    """The loop's counterpart of the fused Beam step's ``Prepare``: a document's ``normalized_words`` computed
    once, giving exact dedup's full-normalization key and, right away, MinHash's band hashes (so, as fused, the
    MinHash work is done also for documents exact or URL dedup then reject, and only the bands wait)."""

    def __init__(self, params: MinhashDedupParams):
        from pipeline.dedup.normalize import normalized_words

        self._normalized_words = normalized_words
        self._lsh = params.lsh()
        self._hasher = MinHasher(self._lsh.num_perm, params.seed, params.ngram, params.scheme, params.shingle_hash)
        self._verify = params.verify
        self._minhash = {}  # id(doc) -> (bands or None, shingle hashes if verify) or the exception

    def text_key(self, doc) -> bytes:
        words = self._normalized_words(text_of(doc))
        try:
            hashes = self._hasher.shingle_hashes_of_words(words)
            bands = band_hashes(self._hasher.signature_of_hashes(hashes), self._lsh.bands, self._lsh.rows) if hashes.size else None
            self._minhash[id(doc)] = (bands, hashes if self._verify else None)
        except Exception as exc:  # MinHash's dead letter, if the document gets that far
            self._minhash[id(doc)] = exc
        return key_of_bytes(words[0].tobytes())

    def minhash_of(self, doc):
        got = self._minhash.pop(id(doc))
        if isinstance(got, Exception):
            raise got
        return got


def _plain_minhash_dedup(docs, stage: str, params: MinhashDedupParams, rejected: list, shared=None) -> list:
    """``minhash.transform.MinhashDedup`` without Beam. Per document exactly ``minhash.banding.SignatureDoFn``'s work (doc_key ->
    node_id, ``MinHasher`` shingle hashes -> signature -> ``band_hashes``, ``priority_of``); no shingle: no
    bucket. Buckets (band, band hash) of each band are grouped with one numpy sort (the Beam stage sorts
    packed batches the same way); each bucket gives star edges (member, smallest node id as bytes), checked
    against the true Jaccard when ``verify``; connected components by union-find. Per component the
    document with the smallest (priority, doc_key, node) is kept (with every document of its node, as
    ``minhash.transform``'s decision), the others are rejected ``<stage>:duplicate``; ``minhash_cluster`` /
    ``minhash_cluster_size`` as ``minhash.transform`` sets them. Union-find always converges, so
    ``max_rounds`` / ``on_unconverged`` have no counterpart here."""
    lsh = params.lsh()
    hasher = MinHasher(lsh.num_perm, params.seed, params.ngram, params.scheme, params.shingle_hash)
    node_index, node_keys, node_docs = {}, [], []  # node id -> index; per index: id, [(priority, key, doc)]
    band_nodes, band_rows, sets = [], [], {}
    for doc in docs:
        try:
            key = doc_key(doc)
            node = node_id(key)
            text = text_of(doc)
            if shared is None:
                hashes = hasher.shingle_hashes(text)
                bands = band_hashes(hasher.signature_of_hashes(hashes), lsh.bands, lsh.rows) if hashes.size else None
            else:
                bands, hashes = shared.minhash_of(doc)
            priority = priority_of(doc, params.keep)
        except Exception as exc:
            rejected.append((doc, error_reason(stage, exc)))
            continue
        i = node_index.setdefault(node, len(node_keys))
        if i == len(node_keys):
            node_keys.append(node)
            node_docs.append([])
        node_docs[i].append((priority, key, doc))
        if bands is not None:
            band_nodes.append(i)
            band_rows.append(bands)
            if params.verify:
                sets.setdefault(i, np.unique(hashes))

    # star edges of every bucket with >= 2 distinct nodes, nodes numbered by the order of their ids
    n = len(node_keys)
    rank = np.empty(n, dtype=np.int64)
    rank[sorted(range(n), key=node_keys.__getitem__)] = np.arange(n)
    index_of_rank = np.argsort(rank)
    member = rank[np.asarray(band_nodes, dtype=np.int64)]
    table = np.stack(band_rows) if band_rows else np.empty((0, lsh.bands), dtype=np.uint64)
    del band_rows
    pieces = []
    for j in range(lsh.bands):
        order = np.lexsort((member, table[:, j]))
        h, r = table[order, j], member[order]
        distinct = np.ones(len(h), dtype=bool)
        distinct[1:] = (h[1:] != h[:-1]) | (r[1:] != r[:-1])
        h, r = h[distinct], r[distinct]
        new = np.ones(len(h), dtype=bool)
        new[1:] = h[1:] != h[:-1]
        head = r[np.flatnonzero(new)][np.cumsum(new) - 1]
        pieces.append(r[~new] * n + head[~new])
    del table
    edges = np.unique(np.concatenate(pieces)) if pieces else np.empty(0, dtype=np.int64)

    parent = {}

    def find(x):
        root = x
        while parent.get(root, root) != root:
            root = parent[root]
        while x != root:  # path compression
            parent[x], x = root, parent[x]
        return root

    for edge in edges.tolist():
        u, v = index_of_rank[edge // n], index_of_rank[edge % n]
        if params.verify and jaccard_of_hash_sets(sets[u], sets[v]) < params.verify_threshold:
            continue
        parent.setdefault(u, u)
        parent.setdefault(v, v)
        ru, rv = find(u), find(v)
        if ru != rv:
            parent[ru] = rv

    components = {}
    for i in parent:
        components.setdefault(find(i), []).append(i)
    decision = {}  # node index -> (representative doc_key, cluster size, keep?)
    for members in components.values():
        best = min((priority, key, node_keys[i], i) for i in members for priority, key, _ in node_docs[i])
        size = sum(len(node_docs[i]) for i in members)
        for i in members:
            decision[i] = (best[1], size, i == best[3])
    kept, why = [], reason(stage, "duplicate")
    for i, entries in enumerate(node_docs):
        for _, key, doc in entries:
            rep_key, size, keep = decision.get(i, (key, 1, True))
            doc[CLUSTER_COLUMN] = rep_key
            doc[SIZE_COLUMN] = size
            if keep:
                kept.append(doc)
            else:
                rejected.append((doc, why))
    return kept


def plain_dedup(docs, exact: ExactDedupParams | None = None, url: UrlDedupParams | None = None,
                minhash: MinhashDedupParams | None = None, share_words: bool = True):
    """exact_dedup -> url_dedup -> minhash_dedup in one process, without Beam, with the Beam stages' semantics
    (which document of a group or cluster is kept, dead letters, the columns each stage adds): (kept,
    rejected (doc, reason)). The documents are updated in place (the stages' columns). ``share_words`` (default,
    as the fused Beam step): the normalized text is computed once per document for exact dedup and MinHash;
    False: each stage normalizes on its own (as the chained stages). What it does not
    repeat: the Beam stages also fail a document that cannot go through a shuffle as JSON (packed)."""
    exact, url, minhash = exact or ExactDedupParams(), url or UrlDedupParams(), minhash or MinhashDedupParams()
    rejected = []
    # with share_words (what the fused Beam step does), the normalized text is computed once per document
    shared = _SharedWords(minhash) if share_words and exact.normalization == "full" else None
    text_key = shared.text_key if shared is not None else TextKey(exact.normalization)
    docs = _plain_group_dedup(docs, ExactDedupStage.name, text_key, exact.keep, rejected)
    docs = _plain_group_dedup(docs, UrlDedupStage.name, UrlKey(url.normalize_url), url.keep, rejected)
    docs = _plain_minhash_dedup(docs, MinhashDedupStage.name, minhash, rejected, shared)
    return docs, rejected


def _vm_kib(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _reset_peak_rss() -> bool:
    """Reset this process's VmHWM to its current RSS (Linux >= 4.0); False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


class GcTimer:
    """CPU seconds the cyclic garbage collector spends from ``start()`` on (a ``gc.callbacks`` hook)."""

    def __init__(self):
        self.seconds, self._t = 0.0, None

    def _hook(self, phase, info):
        if phase == "start":
            self._t = time.process_time()
        elif self._t is not None:
            self.seconds += time.process_time() - self._t
            self._t = None

    def start(self):
        gc.callbacks.append(self._hook)
        return self

    def stop(self) -> float:
        gc.callbacks.remove(self._hook)
        return self.seconds


def _baseline_child(path: str, out: str, minhash: MinhashDedupParams, result_path: str) -> None:
    """The plain loop on the corpus file, as the pipeline: read + json.loads, dedup, write kept ids and reasons.
    The collector gets the threshold ``refinery run`` gives it while it runs (``runtime.RUN_GC_THRESHOLD0``),
    so the two sides differ in their work, not in how often garbage is looked for."""
    gc.set_threshold(runtime.RUN_GC_THRESHOLD0, *gc.get_threshold()[1:])
    gc_timer = GcTimer().start()
    reset = _reset_peak_rss()
    base = _vm_kib("VmRSS")
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu_before = usage.ru_utime + usage.ru_stime
    start = time.perf_counter()
    with open(path, encoding="utf-8") as fh:
        docs = [json.loads(line) for line in fh]
    kept, rejected = plain_dedup(docs, minhash=minhash)
    del docs
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "kept"), "w", encoding="utf-8") as fh:
        fh.writelines(d["id"] + "\n" for d in kept)
    with open(os.path.join(out, "rejected"), "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps([d["id"], r]) + "\n" for d, r in rejected)
    wall = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_SELF)
    with open(result_path, "w") as fh:
        json.dump({"wall": wall, "cpu": usage.ru_utime + usage.ru_stime - cpu_before, "gc": gc_timer.stop(),
                   "base_mib": base / 1024, "peak_mib": _vm_kib("VmHWM") / 1024 if reset else None}, fh)


def run_baseline(path: str, tmp: str, minhash: MinhashDedupParams) -> dict:
    """Run the plain loop in a forked child (its memory apart from the pipeline's): timings, RSS, output folder."""
    out, result_path = os.path.join(tmp, "loop-out"), os.path.join(tmp, "loop-result.json")
    run_in_child(_baseline_child, (path, out, minhash, result_path), "the plain-loop baseline")
    with open(result_path) as fh:
        info = json.load(fh)
    info["out"] = out
    return info


def read_outputs(out: str):
    """(kept ids, Counter of rejection reasons, {rejected id: reason}) of a run's output folder."""
    kept_ids, reasons, rejected = [], Counter(), {}
    for name in os.listdir(out):
        with open(os.path.join(out, name)) as fh:
            for line in fh:
                if name.startswith("kept"):
                    kept_ids.append(line.strip())
                else:
                    doc_id, why = json.loads(line)
                    reasons[why] += 1
                    rejected[doc_id] = why
    return kept_ids, reasons, rejected


class Dedup(beam.PTransform):
    """The dedup stages in order: each its own transform (``fused=False``: chained, every stage shuffles the
    documents), or with consecutive exact/URL/MinHash stages as one ``FusedDedup`` (``fused=True``, as the
    graph builder does)."""

    def __init__(self, stages, fused: bool = False):
        super().__init__()
        self.stages, self.fused = stages, fused

    def expand(self, docs):
        from pipeline.dedup.fused import FusedDedup

        runs = []
        for stage in self.stages:
            if self.fused and fusable(stage) and runs and fusable(runs[-1][-1]):
                runs[-1].append(stage)
            else:
                runs.append([stage])
        rejected = []
        for run in runs:
            if len(run) > 1:
                docs, rej = docs | "+".join(s.name for s in run) >> FusedDedup(run)
            else:
                docs, rej = docs | run[0].name >> run[0].beam_transform()
            rejected.append(rej)
        return docs, tuple(rejected) | "AllRejected" >> beam.Flatten()


def _beam_child(path: str, out: str, stages, fused: bool, beam_args, result_path: str) -> None:
    """The Beam pipeline on the corpus file (read + json.loads, dedup, write kept ids and reasons) in this
    (forked) process: timings, memory and metrics of the run to ``result_path``."""
    p = runtime.new_pipeline(beam_args)  # the runner (and graph set-up) of refinery run: in-process FnApiRunner
    docs = p | "Read" >> beam.io.ReadFromText(path) | "Parse" >> beam.Map(json.loads)
    kept, rejected = docs | Dedup(stages, fused=fused)
    kept | "KeptIds" >> beam.Map(lambda d: d["id"]) | "WriteKept" >> beam.io.WriteToText(os.path.join(out, "kept"))
    rejected | "Reasons" >> beam.Map(lambda dr: json.dumps([dr[0]["id"], dr[1]])) | "WriteRejected" >> beam.io.WriteToText(os.path.join(out, "rejected"))
    base_rss = _rss_mib(os.getpid())
    hwm_reset = _reset_peak_rss()  # the high-water mark then covers the run only
    sampler = RssSampler()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu_before = usage.ru_utime + usage.ru_stime
    child_cpu_before = sum(os.times()[2:4])
    sampler.start()
    gc_timer = GcTimer().start()
    start = time.perf_counter()
    result = runtime.run_to_completion(p)  # as refinery run runs it (the collector's threshold included)
    wall = time.perf_counter() - start
    sampler.stop.set()
    sampler.join()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu = usage.ru_utime + usage.ru_stime - cpu_before + sum(os.times()[2:4]) - child_cpu_before
    with open(result_path, "w") as fh:
        json.dump({"wall": wall, "cpu": cpu, "gc": gc_timer.stop(), "base_rss": base_rss, "peak_total": sampler.peak_total,
                   "peak_worker": sampler.peak_worker, "trace": sampler.trace, "metrics": dedup_metrics(result),
                   "self_hwm": _vm_kib("VmHWM") / 1024 if hwm_reset else usage.ru_maxrss / 1024}, fh)


def run_beam(path: str, tmp: str, stages, design: str, beam_args) -> dict:
    """Run the Beam pipeline (``design`` fused or chained) in a forked child: timings, RSS, metrics, output folder."""
    out, result_path = os.path.join(tmp, f"beam-{design}-out"), os.path.join(tmp, f"beam-{design}.json")
    run_in_child(_beam_child, (path, out, stages, design == "fused", beam_args, result_path), f"the Beam pipeline ({design})")
    with open(result_path) as fh:
        info = json.load(fh)
    info["out"] = out
    return info


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=10_000)
    ap.add_argument("--preset", default="refinedweb", choices=["refinedweb", "dclm", "fineweb"])
    ap.add_argument("--dup-fraction", type=float, default=0.4)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--max-rounds", type=int, default=20)
    ap.add_argument("--substring", action="store_true", help="add substring_dedup (one shuffle element per token)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--corpus-dir", default=None,
                    help="keep the generated corpus here and reuse it on later runs (default: a temporary folder)")
    ap.add_argument("--trace", default=None, help="write the sampled (seconds, total RSS MiB) trace to this CSV")
    ap.add_argument("--design", default="fused", choices=["fused", "chained", "both"],
                    help="fused: exact, URL and MinHash dedup as one transform, documents shuffled once (what refinery "
                         "run builds); chained: each stage its own transform (the design before); both: one after the other")
    ap.add_argument("--rounds", type=int, default=1,
                    help="with --baseline: run the loop and the Beam design(s) this many times, alternating, and print "
                         "each round's CPU ratios and their medians (a loaded machine's CPU times vary by tens of percent)")
    ap.add_argument("--baseline", action="store_true",
                    help="also run the same three stages as a plain single-process loop (plain_dedup) on the same "
                         "corpus, compare time and memory, and check that both keep the same documents")
    ap.add_argument("--default-gc", action="store_true",
                    help="run both sides with Python's default collector thresholds instead of the one refinery run "
                         "sets while it works (runtime.RUN_GC_THRESHOLD0): what that setting saves")
    args = ap.parse_args()
    if args.default_gc:  # the children are forked from here, so they see it
        runtime.RUN_GC_THRESHOLD0 = gc.get_threshold()[0]
    if args.baseline and args.substring:
        ap.error("--baseline covers exact_dedup, url_dedup and minhash_dedup; leave out --substring")

    with tempfile.TemporaryDirectory(prefix="bench-dedup-") as tmp:
        start = time.perf_counter()
        path, words, origins = corpus_file(args.corpus_dir or os.path.join(tmp, "corpus"), args.docs, args.dup_fraction, args.seed)
        print(f"corpus: {args.docs} docs, {words:.0f} words/doc, {len(np.unique(origins))} originals, "
              f"ready in {time.perf_counter() - start:.1f}s ({os.path.getsize(path) / 2**20:.0f} MiB of JSON lines)")

        minhash_params = MinhashDedupParams(preset=args.preset, max_rounds=args.max_rounds)
        stages = [ExactDedupStage(ExactDedupParams()), UrlDedupStage(UrlDedupParams()), MinhashDedupStage(minhash_params)]
        if args.substring:
            stages.append(SubstringDedupStage(SubstringDedupParams()))
        beam_args = []
        if args.workers > 1:
            beam_args = [f"--direct_num_workers={args.workers}", "--direct_running_mode=multi_processing"]
        designs = ["chained", "fused"] if args.design == "both" else [args.design]
        rounds = []  # per round: {"loop": cpu, design: cpu}
        for _ in range(max(1, args.rounds) if args.baseline else 1):
            loop = run_baseline(path, tmp, minhash_params) if args.baseline else None
            runs = {d: run_beam(path, tmp, stages, d, beam_args) for d in designs}
            rounds.append({"loop": loop["cpu"] if loop else None, **{d: r["cpu"] for d, r in runs.items()},
                           "loop:gc": loop["gc"] if loop else None, **{f"{d}:gc": r["gc"] for d, r in runs.items()},
                           **{f"{d}:mem": r["self_hwm"] - r["base_rss"] for d, r in runs.items()},
                           "loop:mem": loop["peak_mib"] - loop["base_mib"] if loop and loop["peak_mib"] else None})
        for run in runs.values():
            run["kept"], run["reasons"], run["rejected"] = read_outputs(run["out"])
        if loop is not None:
            loop["kept"], loop["reasons"], loop["rejected"] = read_outputs(loop["out"])
    same = True
    for design, run in runs.items():
        if args.trace:
            trace = args.trace if len(runs) == 1 else f"{os.path.splitext(args.trace)[0]}-{design}.csv"
            with open(trace, "w") as fh:
                fh.writelines(f"{t:.2f},{m:.0f}\n" for t, m in run["trace"])
        print(f"--- design: {design}")
        same = report_run(args, stages, origins, run, loop) and same
    if len(rounds) > 1:
        print(f"--- {len(rounds)} rounds (loop, then each design, alternating); Beam / loop CPU per round and median:")
        for d in designs:
            ratios = sorted(r[d] / r["loop"] for r in rounds)
            per_round = [r[f"{d}:mem"] / r["loop:mem"] for r in rounds if r["loop:mem"]]
            mem = sorted(per_round)
            print(f"{d}: CPU " + ", ".join(f"{r[d]:.1f}/{r['loop']:.1f}s" for r in rounds)
                  + f" -> median {ratios[len(ratios) // 2]:.2f}x; memory growth "
                  + (", ".join(f"{m:.2f}" for m in per_round) + f" -> median {mem[len(mem) // 2]:.2f}x" if mem else "n/a")
                  + "; garbage collector (Beam/loop) " + ", ".join(f"{r[d + ':gc']:.1f}/{r['loop:gc']:.1f}s" for r in rounds))
    if len(runs) == 2:
        chained, fused = runs["chained"], runs["fused"]
        agree = sorted(chained["kept"]) == sorted(fused["kept"]) and chained["rejected"] == fused["rejected"]
        print(f"--- fused / chained: CPU {fused['cpu']:.1f}s / {chained['cpu']:.1f}s = {fused['cpu'] / chained['cpu']:.2f}x, "
              f"wall {fused['wall'] / chained['wall']:.2f}x; kept sets and rejection reasons identical: {'yes' if agree else 'NO'}")
        same = same and agree
    if not same:
        sys.exit(1)


def report_run(args, stages, origins, run, loop) -> bool:
    """Print one design's run (and Beam vs the loop); True unless the loop kept or rejected otherwise."""
    metrics, kept_ids, reasons, wall, cpu = run["metrics"], run["kept"], run["reasons"], run["wall"], run["cpu"]
    kept_per_cluster = Counter(int(origins[int(doc_id[len("syn-"):])]) for doc_id in kept_ids)
    clusters = set(origins.tolist())
    perfect = sum(1 for c in clusters if kept_per_cluster[c] == 1)
    missed = sum(kept_per_cluster[c] - 1 for c in clusters if kept_per_cluster[c] > 1)
    lost = sum(1 for c in clusters if kept_per_cluster[c] == 0)

    print(f"preset {args.preset}, workers {args.workers}, stages: {', '.join(s.name for s in stages)}")
    print(f"wall {wall:.1f}s  ({args.docs / wall:.0f} docs/s), CPU {cpu:.1f}s, of it the garbage collector {run['gc']:.1f}s")
    print(f"peak RSS: all processes {run['peak_total']:.0f} MiB (sampled every 0.2 s; {run['base_rss']:.0f} MiB before the run), "
          f"driver high-water mark {run['self_hwm']:.0f} MiB, largest worker process {run['peak_worker']:.0f} MiB")
    print(f"connected components: rounds needed {metrics.get('minhash_dedup|cc_rounds_needed', 0)}, "
          f"unconverged nodes {metrics.get('minhash_dedup|cc_unconverged_nodes', 0)}, nodes in clusters {metrics.get('minhash_dedup|cc_nodes', 0)}")
    largest = metrics.get("minhash_dedup|largest_bucket")
    print(f"candidate buckets {metrics.get('minhash_dedup|candidate_buckets', 0)}, star edges "
          f"{metrics.get('minhash_dedup|star_edges', 0)}, largest bucket {largest['max'] if largest else 0}")
    if args.substring:
        print(f"substring_dedup: documents cut {metrics.get('substring_dedup|cut_documents', 0)}, "
              f"tokens removed {metrics.get('substring_dedup|removed_tokens', 0)}")
    print(f"kept {len(kept_ids)}; rejected: " + ", ".join(f"{r} {c}" for r, c in sorted(reasons.items())))
    print(f"truth: {len(clusters)} originals; kept exactly one: {perfect}; extra copies kept (missed): {missed}; "
          f"clusters with nothing kept (over-merged): {lost}")
    if loop is None:
        return True
    peak = run["self_hwm"] if args.workers == 1 else run["peak_total"]
    return report_baseline(loop, wall, cpu, run["base_rss"], peak, kept_ids, run["rejected"], args.workers)


def report_baseline(loop, wall, cpu, beam_base, beam_peak, kept_ids, rejected_ids, workers) -> bool:
    """Print Beam vs the plain loop; True when both kept the same documents (and rejected them for the same reasons)."""
    print(f"plain loop (plain_dedup, one process, same corpus file, same outputs written): wall {loop['wall']:.1f}s, "
          f"CPU {loop['cpu']:.1f}s")
    mem = "driver high-water mark" if workers == 1 else "all processes, sampled"
    print(f"Beam / loop: wall {wall:.1f}s / {loop['wall']:.1f}s = {wall / loop['wall']:.2f}x, "
          f"CPU {cpu:.1f}s / {loop['cpu']:.1f}s = {cpu / loop['cpu']:.2f}x")
    if loop["peak_mib"] is not None:
        print(f"peak RSS: Beam {beam_peak:.0f} MiB ({mem}; +{beam_peak - beam_base:.0f} MiB over {beam_base:.0f} MiB before "
              f"the run), loop {loop['peak_mib']:.0f} MiB (+{loop['peak_mib'] - loop['base_mib']:.0f} MiB over "
              f"{loop['base_mib']:.0f} MiB at its start); Beam / loop increase "
              f"{(beam_peak - beam_base) / max(loop['peak_mib'] - loop['base_mib'], 1e-9):.2f}x")
    else:
        print("peak RSS of the loop: not available (/proc/self/clear_refs not writable)")
    beam_kept, loop_kept = set(kept_ids), set(loop["kept"])
    same_kept = beam_kept == loop_kept and len(kept_ids) == len(beam_kept) and len(loop["kept"]) == len(loop_kept)
    same_reasons = rejected_ids == loop["rejected"]
    print(f"kept document sets identical: {'yes' if same_kept else 'NO'} (Beam {len(kept_ids)}, loop {len(loop['kept'])}, "
          f"only Beam {len(beam_kept - loop_kept)}, only loop {len(loop_kept - beam_kept)}); rejected with the same "
          f"reasons: {'yes' if same_reasons else 'NO'}")
    if not same_reasons:
        print("loop rejected: " + ", ".join(f"{r} {c}" for r, c in sorted(loop["reasons"].items())))
        differ = sorted(set(rejected_ids.items()) ^ set(loop["rejected"].items()))[:10]
        print(f"first differences (id, reason) in one but not the other: {differ}")
    return same_kept and same_reasons


if __name__ == "__main__":
    main()
