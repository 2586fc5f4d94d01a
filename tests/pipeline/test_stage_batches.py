"""The fused DoFn runs its stages stage-major over batches (pipeline.beam.ApplyStagesDoFn): same kept documents,
rejections and counters as the plain loop, each output in its own element's timestamp, whatever the batch size."""

from __future__ import annotations

import gzip
import json

import apache_beam as beam
import pytest
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue

from pipeline import beam as pbeam
from pipeline import runtime
from pipeline.document import make_document
from pipeline.paths import require_shared
from pipeline.stages.base import apply_stage, run_stages
from pipeline.stages.gopher_quality import GopherQuality
from pipeline.stages.gopher_repetition import GopherRepetition

def _docs(n):
    """The first ``n`` real Common Crawl texts of the shared data (some kept, some rejected by each stage)."""
    path = require_shared("cc", "cc-main-2019-30-extracted.jsonl.gz")
    docs = []
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        for i, line in zip(range(n), fh):
            row = json.loads(line)
            docs.append(make_document(id=f"d{i}", text=row["text"], url=row["metadata"].get("warc_url"),
                                      source="mem", record_offset=i))
    return docs


def _stages():
    return [GopherRepetition(GopherRepetition.Params()), GopherQuality(GopherQuality.Params())]


def _run(docs, monkeypatch, batch):
    monkeypatch.setattr(pbeam, "STAGE_BATCH_DOCS", batch)
    expected = list(run_stages(_stages(), [dict(d) for d in docs]))
    want_kept = sorted(d["id"] for d, why in expected if why is None)
    want_rej = sorted((d["id"], why) for d, why in expected if why)
    p = runtime.new_pipeline([])
    pcoll = (p | beam.Create(list(enumerate(docs)))
             | "Stamp" >> beam.Map(lambda iv: TimestampedValue(iv[1], 1000 + iv[0])))
    kept, rejected = pbeam.apply_document_stages(pcoll, _stages())

    class WithTime(beam.DoFn):
        def process(self, doc, ts=beam.DoFn.TimestampParam):
            yield (doc["id"], int(ts.micros // 1_000_000))

    assert_that(kept | "KeptIds" >> beam.ParDo(WithTime()),
                equal_to([(i, 1000 + int(i[1:])) for i in want_kept]), label="kept")
    assert_that(rejected | "RejIds" >> beam.Map(lambda pair: (pair[0]["id"], pair[1])), equal_to(want_rej),
                label="rejected")
    result = runtime.run_to_completion(p)
    return want_kept, want_rej, result


@pytest.mark.parametrize("batch", [1, 3, 64])
def test_batches_decide_as_the_plain_loop_and_keep_timestamps(monkeypatch, batch):
    kept, rejected, result = _run(_docs(40), monkeypatch, batch)
    assert kept and rejected  # both outcomes occur
    assert {r.split(":")[0] for _, r in rejected} == {"gopher_quality", "gopher_repetition"}
    counters = pbeam.query_counters(result)
    assert counters["gopher_repetition|in"] == 40
    assert counters["gopher_quality|in"] == 40 - sum(1 for _, r in rejected if r.startswith("gopher_repetition"))
    assert counters["gopher_quality|kept"] == len(kept)


def test_process_outside_a_bundle_runs_one_document_through_every_stage():
    fn = pbeam.ApplyStagesDoFn(_stages())
    fn.setup()
    docs = _docs(40)
    expected = list(run_stages(_stages(), [dict(d) for d in docs]))
    for doc, (want, why) in zip(docs, expected):
        outs = list(fn.process(dict(doc)))
        assert len(outs) == 1
        if why:
            assert isinstance(outs[0], beam.pvalue.TaggedOutput) and outs[0].value == (want, why)
        else:
            assert outs[0] == want


@pytest.mark.parametrize("batch", [1, 64])
def test_counters_per_stage_reason_and_source_match_the_plain_loop(monkeypatch, batch):
    """The fused DoFn counts a batch at once (``_Counters.count_outcomes``): every in / kept / rejected|reason
    counter, in total and per named source, is what counting each document in the plain loop gives."""
    import collections

    docs = _docs(40)
    for i, d in enumerate(docs):
        d[pbeam.SOURCE_FIELD] = "even" if i % 2 == 0 else "odd"
    want = collections.Counter()
    alive = [dict(d) for d in docs]
    for stage in _stages():
        stage.setup()
        nxt = []
        for doc in alive:
            src = doc[pbeam.SOURCE_FIELD]
            doc, why = apply_stage(stage, doc)
            for prefix in ("", f"{pbeam.SOURCE_COUNTER_PREFIX}{src}|"):
                want[f"{prefix}{stage.name}|in"] += 1
                want[f"{prefix}{stage.name}|" + (f"rejected|{why}" if why else "kept")] += 1
            if not why:
                nxt.append(doc)
        alive = nxt
    _, rejected, result = _run(docs, monkeypatch, batch)
    assert len({why for _, why in rejected}) >= 3  # several reasons, both stages
    assert pbeam.query_counters(result) == dict(want)
