"""Run a dedup stage's Beam transform on an in-memory list of Documents (tests, benchmarks, notebooks).

``run_dedup(stage, docs, beam_args)`` builds a small pipeline (Create -> transform -> JSON-lines
files in a temporary folder), runs it on Beam's in-process FnApiRunner (``--direct_num_workers=N
--direct_running_mode=multi_processing`` in ``beam_args`` for more processes; multi_threading (never: it loses records) is
refused), reads the outputs back and returns them sorted, plus the dedup metrics. Documents must be
JSON-serializable (the Document contract: strings, numbers, None, lists).
"""

from __future__ import annotations

import glob
import json
import os
import tempfile
from typing import Any, Dict, List, Sequence, Tuple

import apache_beam as beam

from pipeline import runtime
from pipeline.dedup.keys import METRICS_NAMESPACE
from pipeline.document import Document, doc_key


def _read_lines(pattern: str) -> List[Any]:
    out = []
    for path in sorted(glob.glob(pattern)):
        with open(path, encoding="utf-8") as fh:
            out.extend(json.loads(line) for line in fh if line.strip())
    return out


def dedup_metrics(result) -> Dict[str, Any]:
    """Counters (as ints) and distributions (as {min, max, sum, count}) of namespace webrefinery.dedup."""
    return runtime.query_metrics(result, METRICS_NAMESPACE)


def run_dedup(transform: beam.PTransform, docs: Sequence[Document], beam_args: Sequence[str] = ()) -> Tuple[List[Document], List[Tuple[Document, str]], Dict[str, Any]]:
    """(kept docs sorted by doc_key, rejected (doc, reason) sorted by doc_key, metrics)."""
    with tempfile.TemporaryDirectory(prefix="dedup-") as tmp:
        p = runtime.new_pipeline(beam_args)  # the embedded runner unless beam_args name another
        kept, rejected = p | "Docs" >> beam.Create(list(docs), reshuffle=True) | "Dedup" >> transform
        kept | "KeptJson" >> beam.Map(json.dumps, sort_keys=True) | "WriteKept" >> beam.io.WriteToText(os.path.join(tmp, "kept"))
        (
            rejected
            | "RejectedJson" >> beam.Map(lambda pair: json.dumps([pair[0], pair[1]], sort_keys=True))
            | "WriteRejected" >> beam.io.WriteToText(os.path.join(tmp, "rejected"))
        )
        result = runtime.run_to_completion(p)
        kept_docs = _read_lines(os.path.join(tmp, "kept*"))
        rejected_pairs = [(d, r) for d, r in _read_lines(os.path.join(tmp, "rejected*"))]
        metrics = dedup_metrics(result)
    kept_docs.sort(key=lambda d: (doc_key(d), json.dumps(d, sort_keys=True)))
    rejected_pairs.sort(key=lambda pr: (doc_key(pr[0]), pr[1], json.dumps(pr[0], sort_keys=True)))
    return kept_docs, rejected_pairs, metrics
