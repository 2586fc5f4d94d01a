"""Exact-substring dedup: the winnowed candidate filter against the exhaustive window shuffle.

Both modes of ``substring_dedup`` run on the same documents in one command, through Beam's in-process
runner (pipeline.dedup.local.run_dedup), and must give identical output (checked here, and by
tests/pipeline/dedup/test_substring.py on planted corpora). Printed per mode: wall time, and the elements that go
through the shuffles, with their approximate size on the wire:

* ``all``: one element per distinct k-token window of every document (16-byte fingerprint + 16-byte
  node + position);
* ``winnow``: one element per distinct winnowed anchor (8-byte hash + 16-byte node; ~2/(w+1) of the
  positions), then windows only of documents that share an anchor, and only around the shared anchors.

Documents are shuffled whole in both modes (``winnow`` moves the documents with a shared anchor twice);
that is reported too, in text bytes.

Input: JSONL(.gz) files with a ``text`` field or Arrow document shards (``--input``); default: the
shared Common Crawl extracts (real pages: their shared spans are boilerplate, quotes and templates).

    .venv/bin/python bench/bench_substring.py [--input FILES...] [--min-tokens 50] [--repeat 2]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from pipeline.dedup.local import run_dedup  # noqa: E402
from pipeline.dedup.stages import SubstringDedupParams, SubstringDedupStage  # noqa: E402
from pipeline.document import make_document  # noqa: E402
from pipeline.paths import require_shared  # noqa: E402


def load_documents(paths):
    docs = []
    for path in paths:
        if path.endswith(".arrow") or os.path.isdir(path):
            from pipeline.io.shards import iter_rows

            rows = iter_rows(path, columns=["id", "text"])
            docs.extend(make_document(id=f"{os.path.basename(path)}:{r['id']}", text=r["text"] or "", source=path,
                                      record_offset=i) for i, r in enumerate(rows))
            continue
        opener = gzip.open if path.endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8") as fh:
            for i, line in enumerate(fh):
                obj = json.loads(line)
                docs.append(make_document(id=f"{os.path.basename(path)}:{i}", text=obj.get("text") or "",
                                          source=path, record_offset=i))
    return docs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--input", nargs="*", help="JSONL(.gz) files with 'text', or Arrow shards / folders")
    ap.add_argument("--min-tokens", type=int, default=50)
    ap.add_argument("--repeat", type=int, default=2, help="runs per mode (the fastest is reported)")
    args = ap.parse_args()
    paths = args.input or [str(p) for p in sorted(require_shared("cc").glob("*.jsonl.gz"))]
    docs = load_documents(paths)
    text_bytes = sum(len(d["text"].encode("utf-8")) for d in docs)
    print(f"{len(docs):,} documents, {text_bytes / 1e6:.1f} MB of text, from {len(paths)} file(s); "
          f"min_tokens {args.min_tokens}")
    results = {}
    for mode in ("all", "winnow"):
        best = None
        for _ in range(args.repeat):
            params = SubstringDedupParams(min_tokens=args.min_tokens, candidates=mode)
            params.validate()
            t0 = time.perf_counter()
            kept, rejected, metrics = run_dedup(SubstringDedupStage(params).beam_transform(), docs)
            wall = time.perf_counter() - t0
            best = wall if best is None else min(best, wall)
        out = (sorted((d["id"], d["text"]) for d in kept), sorted((d["id"], r) for d, r in rejected))
        windows = metrics.get("substring_dedup|windows_shuffled", 0)
        anchors = metrics.get("substring_dedup|anchors_shuffled", 0)
        candidates = metrics.get("substring_dedup|candidate_documents", len(docs) if mode == "all" else 0)
        wire = windows * (16 + 16 + 4) + anchors * (8 + 16)
        results[mode] = (best, out, windows, anchors, wire, candidates)
        print(f"[{mode:6s}] {best:6.2f} s; shuffled: {anchors:>10,} anchors + {windows:>10,} windows "
              f"~ {wire / 1e6:7.1f} MB of keys (text: {text_bytes / 1e6:.1f} MB); documents with candidate "
              f"windows: {candidates:,}; removed tokens {metrics.get('substring_dedup|removed_tokens', 0):,}, "
              f"cut documents {metrics.get('substring_dedup|cut_documents', 0):,}")
    same = results["all"][1] == results["winnow"][1]
    ratio_wire = results["all"][4] / max(results["winnow"][4], 1)
    print(f"\nidentical output: {same}; shuffled key bytes all / winnow = {ratio_wire:.1f}x; "
          f"time all / winnow = {results['all'][0] / results['winnow'][0]:.2f}x")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
