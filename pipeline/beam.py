"""Builds and runs the Beam graph of a pipeline spec: read -> stages -> Arrow shards, fully accounted.

``RefineGraph`` (a composite PTransform, ``p | RefineGraph(stages, inputs, out_dir, output_spec, run_info)``)
is the graph; ``run`` applies it on the runner ``pipeline.runtime`` chooses and returns the counters.
Shape of the graph:

    paths -> [Reshuffle] -> ReadFile (records; read rejections) -> [Reshuffle after the stage that
          declares shrinks_documents, e.g. extract]
          -> ApplyStages(run of consecutive document stages, one fused DoFn)
          -> CollectionStage (dedup: its own transform; a run of consecutive exact/URL/MinHash dedup stages:
             one FusedDedup, the documents shuffled once) -> ApplyStages(...) -> ...
          -> kept: WriteArrowShards(documents/)    rejected (doc, reason): WriteArrowShards(rejected/)
          -> manifest.json (in the graph, so it works on remote runners too)

Accounting: every stage counts ``in``, ``kept`` and each rejection reason with Beam metrics
(namespace ``webrefinery``, counter ``<stage>|in`` / ``<stage>|kept`` / ``<stage>|rejected|<reason>``). An
exception inside a document stage becomes the dead letter ``<stage>:error:<Type>``. With named
inputs (``--input NAME=PATHS``) every document carries ``source_name`` and each counter exists per source as
well (``source=<name>|<stage>|in`` ...), so report.py can show, and check, the funnel of every source. The driver turns the
counters into report.json and cross-checks them against the rows actually written (double entry).
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

import apache_beam as beam
from apache_beam.metrics import Metrics

from pipeline import runtime
from pipeline.document import Document, build_schema, doc_key
from pipeline.io import fs
from pipeline.io import shards as shard_io
from pipeline.stages.base import CollectionStage, DocumentStage, Stage, apply_stage

log = logging.getLogger("webrefinery")

NAMESPACE = "webrefinery"
READ_STAGE = "read"
REJECTED_TAG = "rejected"


RunnerOptionError = runtime.RunnerOptionError  # kept importable from here


def counter_name(stage: str, what: str) -> str:
    return f"{stage}|{what}"


SOURCE_FIELD = "source_name"  # set on every document of a run with named inputs (--input NAME=PATHS)
SOURCE_COUNTER_PREFIX = "source="  # per-source counters: source=<name>|<stage>|in, ... (report.py reads them)


class _Counters:
    """Lazily created Beam counters for one stage (in, kept, rejected|<reason>); ``for_doc`` adds the same
    counters per source for documents that carry a ``source_name``."""

    def __init__(self, stage: str):
        self.stage = stage
        self.inc_in = Metrics.counter(NAMESPACE, counter_name(stage, "in"))
        self.inc_kept = Metrics.counter(NAMESPACE, counter_name(stage, "kept"))
        self._rejected: Dict[str, Any] = {}
        self._per_source: Dict[str, "_Counters"] = {}

    def rejected(self, reason: str):
        c = self._rejected.get(reason)
        if c is None:
            c = self._rejected[reason] = Metrics.counter(NAMESPACE, counter_name(self.stage, "rejected|" + reason))
        return c

    def for_doc(self, doc: Any) -> Optional["_Counters"]:
        """The per-source counters of ``doc``'s source (None when the run has no named sources)."""
        name = doc.get(SOURCE_FIELD) if isinstance(doc, dict) else None
        if name is None:
            return None
        c = self._per_source.get(name)
        if c is None:
            c = self._per_source[name] = _Counters(f"{SOURCE_COUNTER_PREFIX}{name}|{self.stage}")
        return c

    def count(self, doc: Any, what: str, reason: str = "") -> None:
        """Count ``doc`` as in / kept / rejected (with ``reason``), in total and for its source."""
        for c in (self, self.for_doc(doc)):
            if c is not None:
                (c.inc_in if what == "in" else c.inc_kept if what == "kept" else c.rejected(reason)).inc()

    def count_outcomes(self, outcomes: Sequence[Tuple[Any, Optional[str]]]) -> None:
        """Count a batch of (document, reason or None) as ``count`` would one by one (in, then kept or
        rejected|reason; per source too), with one counter update per counter instead of one per document."""
        tallies: Dict[Any, list] = {}
        for doc, why in outcomes:
            for c in (self, self.for_doc(doc)):
                if c is not None:
                    t = tallies.get(c)
                    if t is None:
                        t = tallies[c] = [0, 0, {}]
                    t[0] += 1
                    if why:
                        t[2][why] = t[2].get(why, 0) + 1
                    else:
                        t[1] += 1
        for c, (n_in, n_kept, reasons) in tallies.items():
            c.inc_in.inc(n_in)
            if n_kept:
                c.inc_kept.inc(n_kept)
            for why, n in reasons.items():
                c.rejected(why).inc(n)


def _strip_transport(doc: Document) -> Document:
    doc.pop("html", None)
    return doc


class ReadFileDoFn(beam.DoFn):
    """One input path (or a list read in order, for --limit) -> Documents; read rejections tagged."""

    def __init__(self, limit: Optional[int] = None, read_params: Any = None, sources: Optional[Dict[str, str]] = None):
        self.limit = limit
        self.read_params = read_params
        self.sources = sources  # input path -> source name (named inputs), or None

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
                    if self.sources is not None:
                        doc[SOURCE_FIELD] = self.sources[path]
                    self.counters.count(doc, "in")
                    if why:
                        self.counters.count(doc, "rejected", why)
                        yield beam.pvalue.TaggedOutput(REJECTED_TAG, (_strip_transport(doc), why))
                    else:
                        self.counters.count(doc, "kept")
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


# Documents a fused DoFn runs stage-major at a time (or fewer, once their HTML and text reach
# STAGE_BATCH_CHARS characters): each stage's code and data (the fastText model, the parser) stay in the
# CPU's caches across the batch instead of being evicted by the other stages after every document: the
# stages cost ~1.5x less CPU on the 4 shared archives of bench/bench_docpath.py (its stage-major table),
# the whole rw_filtered run ~10% less; the outputs are identical (shards are sorted; counts are counts).
STAGE_BATCH_DOCS = 64
STAGE_BATCH_CHARS = 16 << 20


def _size(doc: Document) -> int:
    return sum(len(v) for v in (doc.get("html"), doc.get("text")) if isinstance(v, str))


class ApplyStagesDoFn(beam.DoFn):
    """A run of consecutive document stages fused into one DoFn (one call per document, not per stage).

    Within a bundle the documents are buffered and the stages run stage-major over batches of
    ``STAGE_BATCH_DOCS`` (each output keeps its own element's timestamp and window); called outside a bundle
    (``process`` without ``start_bundle``, as a test may), one document goes through all stages at once."""

    def __init__(self, stages: Sequence[DocumentStage]):
        self.stages = list(stages)
        self._batch = None

    def setup(self):
        for stage in self.stages:
            stage.setup()
        self.counters = [_Counters(s.name) for s in self.stages]

    def start_bundle(self):
        self._batch, self._chars = [], 0

    def process(self, doc: Document, timestamp=beam.DoFn.TimestampParam, window=beam.DoFn.WindowParam):
        if self._batch is None:
            yield from self._run([(doc, None)], windowed=False)
            return
        self._batch.append((doc, (timestamp, window)))
        self._chars += _size(doc)
        if len(self._batch) >= STAGE_BATCH_DOCS or self._chars >= STAGE_BATCH_CHARS:
            yield from self._flush()

    def finish_bundle(self):
        yield from self._flush()

    def _flush(self):
        batch, self._batch, self._chars = self._batch, [], 0
        return self._run(batch, windowed=True)

    def _run(self, batch, windowed: bool):
        from apache_beam.utils.windowed_value import WindowedValue

        def out(value, where):
            return WindowedValue(value, where[0], (where[1],)) if windowed else value

        for stage, counters in zip(self.stages, self.counters):
            survivors, outcomes = [], []
            for doc, where in batch:
                doc, why = apply_stage(stage, doc)
                outcomes.append((doc, why))
                if why:
                    yield beam.pvalue.TaggedOutput(REJECTED_TAG, out((_strip_transport(doc), why), where))
                else:
                    survivors.append((doc, where))
            counters.count_outcomes(outcomes)  # once per stage and batch: Beam's counter updates cost ~2 us each
            batch = survivors
        for doc, where in batch:
            yield out(doc, where)


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
        if self.what == "rejected":
            self.counters.count(element[0], "rejected", element[1])
        else:
            self.counters.count(element, self.what)
        yield element


def apply_collection_stage(pcoll, stage: CollectionStage):
    """Apply a whole-collection stage (dedup) with the same accounting as document stages."""
    counted = pcoll | f"{stage.name}:CountIn" >> beam.ParDo(_CountDoFn(stage.name, "in"))
    kept, rejected = counted | stage.name >> stage.beam_transform()
    kept = kept | f"{stage.name}:CountKept" >> beam.ParDo(_CountDoFn(stage.name, "kept"))
    rejected = rejected | f"{stage.name}:CountRejected" >> beam.ParDo(_CountDoFn(stage.name, "rejected"))
    return kept, rejected


def apply_fused_dedup(pcoll, stages: Sequence[CollectionStage]):
    """A run of consecutive dedup stages as one transform (``pipeline.dedup.fused``: the documents cross one
    shuffle), counted per stage as ``apply_collection_stage`` counts a single one."""
    from pipeline.dedup.fused import FusedDedup

    return pcoll | "+".join(s.name for s in stages) >> FusedDedup(stages, counters=_Counters)


def _with_reason(pair: Tuple[Document, str]) -> Document:
    doc, why = pair
    doc = dict(doc)
    doc.pop("html", None)
    doc["reason"] = why
    return doc


class WriteShardFiles(beam.PTransform):
    """Write Documents as the non-empty ones of N deterministic Arrow shards; outputs one manifest entry per
    shard written (``shard_io.complete_shard_set`` adds the empty ones)."""

    def __init__(self, out_dir: str, schema, num_shards: int, prefix: str = "part", compression: Optional[str] = "zstd"):
        super().__init__()
        self.out_dir, self.schema, self.num_shards = out_dir, schema, num_shards
        self.prefix, self.compression = prefix, compression

    def shard_set(self) -> Tuple[Any, ...]:
        """What ``shard_io.complete_shard_set`` needs after the entries: (folder, N, schema, prefix,
        compression), plain values that a DoFn can carry without this transform."""
        return self.out_dir, self.num_shards, self.schema, self.prefix, self.compression

    def expand(self, pcoll):
        n, out_dir, schema, prefix, comp = self.num_shards, self.out_dir, self.schema, self.prefix, self.compression
        return (
            pcoll
            | "KeyByShard" >> beam.Map(lambda d: (shard_io.shard_of(doc_key(d), n), d))
            | "GroupByShard" >> beam.GroupByKey()
            | "WriteShard" >> beam.MapTuple(lambda i, rows: shard_io.write_shard(rows, out_dir, i, n, schema, prefix, compression=comp))
        )


class WriteArrowShards(WriteShardFiles):
    """Write Documents as N deterministic Arrow shards; outputs one element: the N manifest entries."""

    def expand(self, pcoll):
        return (
            super().expand(pcoll)
            | "CollectEntries" >> beam.combiners.ToList()
            | "CompleteShards" >> beam.Map(shard_io.complete_shard_set, *self.shard_set())
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


def schemas_for(stages: Sequence[Stage], named_sources: bool = False):
    """(documents schema, rejected schema); ``source_name`` follows the core columns when inputs are named."""
    import pyarrow as pa

    columns: Dict[str, Any] = {SOURCE_FIELD: pa.string()} if named_sources else {}
    for stage in stages:
        columns.update(stage.output_columns())
    return build_schema(columns), build_schema(columns, rejected=True)


def spread_point(stages: Sequence[Stage]) -> Optional[Stage]:
    """The first document stage that declares ``shrinks_documents`` (its output is much smaller than its input,
    e.g. extraction: a page's text is ~30x smaller than its HTML): documents are spread over workers after it."""
    return next((s for s in stages if s.kind == "document" and getattr(s, "shrinks_documents", False)), None)


class _Step(NamedTuple):
    stages: Tuple[Stage, ...]  # consecutive document stages (fused into one DoFn), one collection stage, or
                               # a run of consecutive fusable dedup stages (pipeline.dedup.stages.fusable)
    collection: bool = False
    spread_after: bool = False  # Reshuffle the kept documents after this step


def plan_steps(stages: Sequence[Stage], spread: bool) -> List[_Step]:
    """The graph's steps in order: runs of document stages cut at collection stages and at the spread point;
    consecutive fusable dedup stages (exact, URL, MinHash) are one step."""
    from pipeline.dedup.stages import fusable

    point = spread_point(stages) if spread else None
    steps: List[_Step] = []
    pending: List[Stage] = []
    for stage in stages:
        if isinstance(stage, CollectionStage):
            if pending:
                steps.append(_Step(tuple(pending)))
                pending = []
            if fusable(stage) and steps and steps[-1].collection and fusable(steps[-1].stages[-1]):
                steps[-1] = _Step(steps[-1].stages + (stage,), collection=True)
            else:
                steps.append(_Step((stage,), collection=True))
        else:
            pending.append(stage)
            if stage is point:
                steps.append(_Step(tuple(pending), spread_after=True))
                pending = []
    if pending:
        steps.append(_Step(tuple(pending)))
    return steps


class RefineGraph(beam.PTransform):
    """The whole pipeline as one composite transform, applied to a Pipeline: ``p | RefineGraph(...)``.

    ``run_info`` goes into manifest.json. Expands to a dict of PCollections of manifest entries
    (``documents`` and, when rejected rows are written, ``rejected``).

    ``spread`` inserts Reshuffles after listing files (files spread over workers) and after the stage that
    declares ``shrinks_documents`` (the documents of one huge file spread over all workers for the remaining
    stages; shuffling after extraction moves ~30x fewer bytes than shuffling HTML), or right after reading
    when no stage declares it. A single in-process worker gains nothing from it and pays the serialization,
    so ``run`` turns it off there; outputs are identical either way.
    """

    def __init__(self, stages: Sequence[Stage], inputs: Sequence[str], out_dir: str, output_spec, run_info: Dict[str, Any],
                 *, limit: Optional[int] = None, read_params: Any = None, spread: bool = True,
                 sources: Optional[Dict[str, str]] = None):
        super().__init__()
        self.stages, self.inputs, self.out_dir = list(stages), list(inputs), out_dir
        self.output_spec, self.run_info = output_spec, run_info
        self.limit, self.read_params, self.spread = limit, read_params, spread
        self.sources = dict(sources) if sources else None  # input path -> source name

    def expand(self, pbegin):
        docs, rejected = self._read(pbegin)
        steps = plan_steps(self.stages, self.spread)
        if self.spread and not any(step.spread_after for step in steps):
            docs = docs | "SpreadDocs" >> beam.Reshuffle()
        rejected = [rejected]
        for step in steps:
            if step.collection:
                docs, rej = (apply_collection_stage(docs, step.stages[0]) if len(step.stages) == 1
                             else apply_fused_dedup(docs, step.stages))
            else:
                docs, rej = apply_document_stages(docs, step.stages, label="Stages[" + ",".join(s.name for s in step.stages) + "]")
            rejected.append(rej)
            if step.spread_after:
                docs = docs | "SpreadDocs" >> beam.Reshuffle()
        return self._write_manifest(pbegin, self._write(docs, rejected))

    def _read(self, pbegin):
        """PBegin -> (documents, read rejections); with --limit one DoFn reads the inputs in order."""
        if self.limit is not None:
            files = pbegin | "Inputs" >> beam.Create([self.inputs])
        else:
            files = pbegin | "Inputs" >> beam.Create(self.inputs)
            if self.spread:
                files = files | "SpreadFiles" >> beam.Reshuffle()
        read = files | "Read" >> beam.ParDo(ReadFileDoFn(self.limit, self.read_params, self.sources)).with_outputs(REJECTED_TAG, main="docs")
        return read.docs, read[REJECTED_TAG]

    def _write(self, docs, rejected: List[Any]) -> Dict[str, Any]:
        """Kept documents and (when configured) rejected rows as Arrow shards; {kind: (the entries of the shards
        written, their WriteShardFiles)}."""
        spec = self.output_spec
        schema, rejected_schema = schemas_for(self.stages, named_sources=self.sources is not None)
        comp = None if spec.compression == "none" else spec.compression
        writers = {"documents": WriteShardFiles(fs.join(self.out_dir, "documents"), schema, spec.num_shards, compression=comp)}
        flat = tuple(rejected) | "FlattenRejected" >> beam.Flatten()
        if spec.write_rejected:
            writers["rejected"] = WriteShardFiles(fs.join(self.out_dir, "rejected"), rejected_schema, spec.rejected_shards, compression=comp)
            flat = flat | "AddReason" >> beam.Map(_with_reason)
        else:
            flat | "DropRejected" >> beam.Filter(lambda _: False)
        inputs = {"documents": docs, "rejected": flat}
        return {kind: (inputs[kind] | f"Write{kind.capitalize()}" >> writer, writer) for kind, writer in writers.items()}

    def _write_manifest(self, pbegin, outputs: Dict[str, Any]) -> Dict[str, Any]:
        """One step once every shard is written: the empty shards of each kind, then manifest.json; returns
        {kind: PCollection of its one list of N manifest entries}.

        The entries reach it as side inputs (a list per kind, [] when nothing was written) of a single
        impulse, rather than through a ToList per kind and one for the manifest: the same files, the same
        manifest, and 5 runner stages instead of 11 for a pipeline without dedup (start-up:
        ``bench/bench_startup.py``)."""
        out_dir, run_info = self.out_dir, self.run_info
        kinds = list(outputs)
        shard_sets = [outputs[k][1].shard_set() for k in kinds]

        def finish(_, *entries):
            complete = {kind: shard_io.complete_shard_set(list(es), *shard_set)
                        for kind, shard_set, es in zip(kinds, shard_sets, entries)}
            _finalize_manifest(complete, out_dir, run_info)
            return complete

        done = (pbegin | "Done" >> beam.Impulse()
                | "WriteManifest" >> beam.Map(finish, *[beam.pvalue.AsList(outputs[k][0]) for k in kinds]))
        return {kind: done | f"Entries[{kind}]" >> beam.Map(lambda c, kind=kind: c[kind]) for kind in kinds}


GRAPH_LABEL = "Refine"


def build_graph(p, stages: Sequence[Stage], inputs: Sequence[str], out_dir: str, output_spec, run_info: Dict[str, Any],
                limit: Optional[int] = None, read_params: Any = None, spread: bool = True):
    """``p | RefineGraph(...)`` under the label ``Refine`` (the call shape the tests and benchmarks use)."""
    return p | GRAPH_LABEL >> RefineGraph(stages, inputs, out_dir, output_spec, run_info,
                                          limit=limit, read_params=read_params, spread=spread)


# The option, runner and counter helpers live in pipeline.runtime (one place for run, dedup and tokenize).
make_options = runtime.make_options
make_runner = runtime.make_runner

DIAGNOSTIC_NAMESPACES = ("webrefinery.dedup",)


def query_counters(result, namespace: str = NAMESPACE) -> Dict[str, int]:
    """Counters of a finished pipeline in ``namespace`` (default: the accounting counters) as {name: value}."""
    return runtime.query_counters(result, namespace)


def run(stages: Sequence[Stage], inputs: Sequence[str], out_dir: str, output_spec, run_info: Dict[str, Any],
        limit: Optional[int] = None, beam_args: Sequence[str] = (), read_params: Any = None,
        sources: Optional[Dict[str, str]] = None) -> Dict[str, int]:
    """Build and run the graph; block until done; return the counters (accounting, then diagnostics)."""
    options = runtime.make_options(beam_args)
    p = runtime.new_pipeline(options=options)
    p | GRAPH_LABEL >> RefineGraph(stages, inputs, out_dir, output_spec, run_info, limit=limit, read_params=read_params,
                                   spread=not runtime.single_worker(options), sources=sources)
    result = runtime.run_to_completion(p)
    counters = query_counters(result)
    for ns in DIAGNOSTIC_NAMESPACES:  # stage diagnostics (e.g. connected-component rounds), not accounting
        for name, value in query_counters(result, ns).items():
            counters[f"diagnostics|{ns}|{name}"] = value
    return counters
