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
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions

from pipeline.errors import UserValueError
from pipeline.dedup.lsh import METRICS_NAMESPACE
from pipeline.document import Document, doc_key


def _read_lines(pattern: str) -> List[Any]:
    out = []
    for path in sorted(glob.glob(pattern)):
        with open(path, encoding="utf-8") as fh:
            out.extend(json.loads(line) for line in fh if line.strip())
    return out


def dedup_metrics(result) -> Dict[str, Any]:
    """Counters (as ints) and distributions (as {min, max, sum, count}) of namespace webrefinery.dedup."""
    metrics: Dict[str, Any] = {}
    query = result.metrics().query(MetricsFilter().with_namespace(METRICS_NAMESPACE))
    for c in query["counters"]:
        value = c.committed if c.committed is not None else c.attempted
        metrics[c.key.metric.name] = metrics.get(c.key.metric.name, 0) + int(value or 0)
    for d in query["distributions"]:
        value = d.committed if d.committed is not None else d.attempted
        if value is not None:
            metrics[d.key.metric.name] = {"min": value.min, "max": value.max, "sum": value.sum, "count": value.count}
    return metrics


def run_dedup(transform: beam.PTransform, docs: Sequence[Document], beam_args: Sequence[str] = ()) -> Tuple[List[Document], List[Tuple[Document, str]], Dict[str, Any]]:
    """(kept docs sorted by doc_key, rejected (doc, reason) sorted by doc_key, metrics)."""
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner

    options = PipelineOptions(list(beam_args))
    if options.view_as(DirectOptions).direct_running_mode == "multi_threading":  # refused: it loses records
        raise UserValueError("direct_running_mode=multi_threading loses records at GroupByKey here; use multi_processing")
    with tempfile.TemporaryDirectory(prefix="dedup-") as tmp:
        p = beam.Pipeline(runner=FnApiRunner(), options=options)
        kept, rejected = p | "Docs" >> beam.Create(list(docs), reshuffle=True) | "Dedup" >> transform
        kept | "KeptJson" >> beam.Map(json.dumps, sort_keys=True) | "WriteKept" >> beam.io.WriteToText(os.path.join(tmp, "kept"))
        (
            rejected
            | "RejectedJson" >> beam.Map(lambda pair: json.dumps([pair[0], pair[1]], sort_keys=True))
            | "WriteRejected" >> beam.io.WriteToText(os.path.join(tmp, "rejected"))
        )
        result = p.run()
        result.wait_until_finish()
        kept_docs = _read_lines(os.path.join(tmp, "kept*"))
        rejected_pairs = [(d, r) for d, r in _read_lines(os.path.join(tmp, "rejected*"))]
        metrics = dedup_metrics(result)
    kept_docs.sort(key=lambda d: (doc_key(d), json.dumps(d, sort_keys=True)))
    rejected_pairs.sort(key=lambda pr: (doc_key(pr[0]), pr[1], json.dumps(pr[0], sort_keys=True)))
    return kept_docs, rejected_pairs, metrics
