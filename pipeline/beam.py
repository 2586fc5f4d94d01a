"""Builds and runs the Beam graph of a pipeline spec: read -> stages -> Arrow shards, fully accounted.

Shape of the graph:

    paths -> [Reshuffle] -> ReadFile (records; read rejections) -> Reshuffle
          -> ApplyStages(run of consecutive document stages, one fused DoFn)
          -> CollectionStage (dedup: its own transform) -> ApplyStages(...) -> ...
          -> kept: WriteArrowShards(documents/)    rejected (doc, reason): WriteArrowShards(rejected/)
          -> manifest.json (in the graph, so it works on remote runners too)

Accounting: every stage counts ``in``, ``kept`` and each rejection reason with Beam metrics
(namespace ``webrefinery``, counter ``<stage>|in`` / ``<stage>|kept`` / ``<stage>|rejected|<reason>``). An
exception inside a document stage becomes the dead letter ``<stage>:error:<Type>``. The driver turns the
counters into report.json and cross-checks them against the rows actually written (double entry).
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions

from pipeline.document import Document, build_schema, doc_key
from pipeline.io import fs
from pipeline.io import shards as shard_io
from pipeline.stages.base import CollectionStage, DocumentStage, Stage, apply_stage
from pipeline.errors import UserError

log = logging.getLogger("webrefinery")

NAMESPACE = "webrefinery"
READ_STAGE = "read"
REJECTED_TAG = "rejected"


class RunnerOptionError(UserError, ValueError):
    """A Beam option that this project refuses (with the reason)."""


def counter_name(stage: str, what: str) -> str:
    return f"{stage}|{what}"


class _Counters:
    """Lazily created Beam counters for one stage (in, kept, rejected|<reason>)."""

    def __init__(self, stage: str):
        self.stage = stage
        self.inc_in = Metrics.counter(NAMESPACE, counter_name(stage, "in"))
        self.inc_kept = Metrics.counter(NAMESPACE, counter_name(stage, "kept"))
        self._rejected: Dict[str, Any] = {}

    def rejected(self, reason: str):
        c = self._rejected.get(reason)
        if c is None:
            c = self._rejected[reason] = Metrics.counter(NAMESPACE, counter_name(self.stage, "rejected|" + reason))
        return c


def _strip_transport(doc: Document) -> Document:
    doc.pop("html", None)
    return doc


class ReadFileDoFn(beam.DoFn):
    """One input path (or a list read in order, for --limit) -> Documents; read rejections tagged."""

    def __init__(self, limit: Optional[int] = None, read_params: Any = None):
        self.limit = limit
        self.read_params = read_params

    def setup(self):
        self.counters = _Counters(READ_STAGE)

    def process(self, paths):
        from pipeline.io.readers import iter_records

        if isinstance(paths, str):
            paths = [paths]
        seen = 0
        for path in paths:
            start, n_file = time.time(), 0
            bar = _progress_bar(path)
            try:
                for doc, why in iter_records(path, params=self.read_params):
                    if self.limit is not None and seen >= self.limit:
                        return
                    seen += 1
                    n_file += 1
                    if bar is not None:
                        bar.update(1)
                    self.counters.inc_in.inc()
                    if why:
                        self.counters.rejected(why).inc()
                        yield beam.pvalue.TaggedOutput(REJECTED_TAG, (_strip_transport(doc), why))
                    else:
                        self.counters.inc_kept.inc()
                        yield doc
            finally:
                if bar is not None:
                    bar.close()
            log.info("read %s: %d records in %.1fs", os.path.basename(path), n_file, time.time() - start)


def _progress_bar(path: str):
    """A per-file progress bar on stderr for interactive runs (REFINERY_PROGRESS=0 turns it off, =1 forces it).

    Documents are counted as the file is read; downstream stages run fused with the reader on the same
    worker, so the bar advances at the speed of the whole pipeline up to the first shuffle."""
    import sys

    wanted = os.environ.get("REFINERY_PROGRESS")
    if wanted == "0" or (wanted != "1" and not sys.stderr.isatty()):
        return None
    from tqdm import tqdm

    return tqdm(desc=os.path.basename(path)[:40], unit=" records", leave=False, mininterval=0.5, file=sys.stderr)


class ApplyStagesDoFn(beam.DoFn):
    """A run of consecutive document stages fused into one DoFn (one call per document, not per stage)."""

    def __init__(self, stages: Sequence[DocumentStage]):
        self.stages = list(stages)

    def setup(self):
        for stage in self.stages:
            stage.setup()
        self.counters = [_Counters(s.name) for s in self.stages]

    def process(self, doc: Document):
        for stage, counters in zip(self.stages, self.counters):
            counters.inc_in.inc()
            doc, why = apply_stage(stage, doc)
            if why:
                counters.rejected(why).inc()
                yield beam.pvalue.TaggedOutput(REJECTED_TAG, (_strip_transport(doc), why))
                return
            counters.inc_kept.inc()
        yield doc


def apply_document_stages(pcoll, stages: Sequence[DocumentStage], label: str = "Stages"):
    """Apply document stages to a PCollection of Documents; returns (kept, rejected (doc, reason))."""
    out = pcoll | label >> beam.ParDo(ApplyStagesDoFn(stages)).with_outputs(REJECTED_TAG, main="kept")
    return out.kept, out[REJECTED_TAG]


class _CountDoFn(beam.DoFn):
    def __init__(self, stage: str, what: str):
        self.stage, self.what = stage, what

    def setup(self):
        self.counters = _Counters(self.stage)

    def process(self, element):
        if self.what == "in":
            self.counters.inc_in.inc()
        elif self.what == "kept":
            self.counters.inc_kept.inc()
        else:
            self.counters.rejected(element[1]).inc()
        yield element


def apply_collection_stage(pcoll, stage: CollectionStage):
    """Apply a whole-collection stage (dedup) with the same accounting as document stages."""
    counted = pcoll | f"{stage.name}:CountIn" >> beam.ParDo(_CountDoFn(stage.name, "in"))
    kept, rejected = counted | stage.name >> stage.beam_transform()
    kept = kept | f"{stage.name}:CountKept" >> beam.ParDo(_CountDoFn(stage.name, "kept"))
    rejected = rejected | f"{stage.name}:CountRejected" >> beam.ParDo(_CountDoFn(stage.name, "rejected"))
    return kept, rejected


def _with_reason(pair: Tuple[Document, str]) -> Document:
    doc, why = pair
    doc = dict(doc)
    doc.pop("html", None)
    doc["reason"] = why
    return doc


class WriteArrowShards(beam.PTransform):
    """Write Documents as N deterministic Arrow shards; outputs one manifest entry per shard."""

    def __init__(self, out_dir: str, schema, num_shards: int, prefix: str = "part", compression: Optional[str] = "zstd"):
        super().__init__()
        self.out_dir, self.schema, self.num_shards = out_dir, schema, num_shards
        self.prefix, self.compression = prefix, compression

    def expand(self, pcoll):
        n, out_dir, schema, prefix, comp = self.num_shards, self.out_dir, self.schema, self.prefix, self.compression
        entries = (
            pcoll
            | "KeyByShard" >> beam.Map(lambda d: (shard_io.shard_of(doc_key(d), n), d))
            | "GroupByShard" >> beam.GroupByKey()
            | "WriteShard" >> beam.MapTuple(lambda i, rows: shard_io.write_shard(rows, out_dir, i, n, schema, prefix, compression=comp))
        )
        return (
            entries
            | "CollectEntries" >> beam.combiners.ToList()
            | "CompleteShards" >> beam.Map(lambda es: shard_io.complete_shard_set(es, out_dir, n, schema, prefix, comp))
        )


def _finalize_manifest(outputs: Dict[str, List[Dict[str, Any]]], out_dir: str, run_info: Dict[str, Any]) -> None:
    """Write manifest.json and remove stale shards of earlier runs that are not part of this one."""
    for kind, entries in outputs.items():
        keep = {e["name"] for e in entries}
        stale = [path for path in fs.list_files(fs.join(out_dir, kind, "*"))
                 if (path.endswith(shard_io.SHARD_SUFFIX) and fs.basename(path) not in keep) or path.endswith(".tmp")]
        fs.delete(stale)
    manifest = {**run_info, "format": "arrow-ipc-file", **outputs}
    shard_io.write_json_atomically(manifest, fs.join(out_dir, "manifest.json"))


def schemas_for(stages: Sequence[Stage]):
    columns: Dict[str, Any] = {}
    for stage in stages:
        columns.update(stage.output_columns())
    return build_schema(columns), build_schema(columns, rejected=True)


def build_graph(p, stages: Sequence[Stage], inputs: Sequence[str], out_dir: str, output_spec, run_info: Dict[str, Any],
                limit: Optional[int] = None, read_params: Any = None, spread: bool = True):
    """Add the whole pipeline to Beam pipeline ``p``; ``run_info`` goes into manifest.json.

    ``spread`` inserts Reshuffles after listing files (files spread over workers) and after extraction (the
    documents of one huge file spread over all workers for the remaining stages; shuffling after extraction
    moves ~30x fewer bytes than shuffling HTML). A single in-process worker gains nothing from it and pays
    the serialization, so ``run`` turns it off there; outputs are identical either way.
    """
    if limit is not None:
        read = p | "Inputs" >> beam.Create([list(inputs)]) | "Read" >> beam.ParDo(ReadFileDoFn(limit, read_params)).with_outputs(REJECTED_TAG, main="docs")
    else:
        files = p | "Inputs" >> beam.Create(list(inputs))
        if spread:
            files = files | "SpreadFiles" >> beam.Reshuffle()
        read = files | "Read" >> beam.ParDo(ReadFileDoFn(None, read_params)).with_outputs(REJECTED_TAG, main="docs")
    docs = read.docs
    rejected = [read[REJECTED_TAG]]
    # Spread documents over workers after extraction (a page's text is ~30x smaller than its HTML), or right
    # after reading when the pipeline has no extraction stage.
    names = [s.name for s in stages]
    spread_after = "extract" if "extract" in names else None
    if spread and spread_after is None:
        docs = docs | "SpreadDocs" >> beam.Reshuffle()

    run: List[DocumentStage] = []
    group = 0

    def flush(docs):
        nonlocal group, run
        if not run:
            return docs
        group += 1
        label = "Stages[" + ",".join(s.name for s in run) + "]"
        docs, rej = apply_document_stages(docs, run, label=label)
        rejected.append(rej)
        run = []
        return docs

    for stage in stages:
        if isinstance(stage, CollectionStage):
            docs = flush(docs)
            docs, rej = apply_collection_stage(docs, stage)
            rejected.append(rej)
        else:
            run.append(stage)
            if spread and stage.name == spread_after:
                docs = flush(docs) | "SpreadDocs" >> beam.Reshuffle()
    docs = flush(docs)

    schema, rejected_schema = schemas_for(stages)
    comp = None if output_spec.compression == "none" else output_spec.compression
    kept_entries = docs | "WriteDocuments" >> WriteArrowShards(fs.join(out_dir, "documents"), schema, output_spec.num_shards, compression=comp)
    outputs = {"documents": kept_entries}
    if output_spec.write_rejected:
        all_rejected = tuple(rejected) | "FlattenRejected" >> beam.Flatten() | "AddReason" >> beam.Map(_with_reason)
        outputs["rejected"] = all_rejected | "WriteRejected" >> WriteArrowShards(fs.join(out_dir, "rejected"), rejected_schema, output_spec.rejected_shards, compression=comp)
    else:
        tuple(rejected) | "FlattenRejected" >> beam.Flatten() | "DropRejected" >> beam.Filter(lambda _: False)

    names = list(outputs)
    manifest_in = [outputs[k] | f"Tag[{k}]" >> beam.Map(lambda es, k=k: (k, es)) for k in names]
    (
        manifest_in
        | "FlattenManifest" >> beam.Flatten()
        | "CollectManifest" >> beam.combiners.ToList()
        | "WriteManifest" >> beam.Map(lambda kv: _finalize_manifest(dict(kv), out_dir, run_info))
    )
    return outputs


def make_options(beam_args: Sequence[str] = ()) -> PipelineOptions:
    """Pipeline options from Beam command-line flags, refusing known-bad settings."""
    options = PipelineOptions(list(beam_args))
    direct = options.view_as(DirectOptions)
    if direct.direct_running_mode == "multi_threading":  # refused: it loses records at GroupByKey
        raise RunnerOptionError(
            "--direct_running_mode=multi_threading is refused: it was measured to lose records at GroupByKey "
            "and to blow up memory. Use --direct_running_mode=multi_processing --direct_num_workers=N for more cores."
        )
    return options


def make_runner(options: PipelineOptions):
    """The embedded default is Beam's in-process FnApiRunner (plain DirectRunner tries to download Prism)."""
    runner = options.view_as(StandardOptions).runner
    if runner in (None, "", "FnApiRunner", "InProcess"):
        from apache_beam.runners.portability.fn_api_runner import FnApiRunner

        return FnApiRunner()
    return runner


def query_counters(result, namespace: str = NAMESPACE) -> Dict[str, int]:
    """Counters of a finished pipeline in ``namespace`` (default: the accounting counters) as {name: value}."""
    counters: Dict[str, int] = {}
    for c in result.metrics().query(MetricsFilter().with_namespace(namespace))["counters"]:
        try:
            value = c.committed
        except Exception:  # some runners support only attempted metrics
            value = None
        if value is None:
            value = c.attempted
        counters[c.key.metric.name] = counters.get(c.key.metric.name, 0) + int(value or 0)
    return counters


DIAGNOSTIC_NAMESPACES = ("webrefinery.dedup",)


def run(stages: Sequence[Stage], inputs: Sequence[str], out_dir: str, output_spec, run_info: Dict[str, Any],
        limit: Optional[int] = None, beam_args: Sequence[str] = (), read_params: Any = None) -> Dict[str, int]:
    """Build and run the graph; block until done; return the counters."""
    options = make_options(beam_args)
    runner = make_runner(options)
    p = beam.Pipeline(runner=runner, options=options)
    direct = options.view_as(DirectOptions)
    single_in_process = not isinstance(runner, str) and direct.direct_num_workers == 1
    build_graph(p, stages, inputs, out_dir, output_spec, run_info, limit, read_params, spread=not single_in_process)
    result = p.run()
    result.wait_until_finish()
    counters = query_counters(result)
    for ns in DIAGNOSTIC_NAMESPACES:  # stage diagnostics (e.g. connected-component rounds), not accounting
        for name, value in query_counters(result, ns).items():
            counters[f"diagnostics|{ns}|{name}"] = value
    return counters
