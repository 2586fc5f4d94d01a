"""A run of dedup stages fused into one transform (``pipeline.dedup.fused.FusedDedup``: the documents cross
one shuffle, the decisions travel as keys) keeps, rejects and annotates exactly what the chained stages do,
in every order the stages can come in, and counts every stage's funnel as the chain does.

The corpus is the benchmark's synthetic near-duplicate corpus (real sentences, chains of edited copies,
case-only copies, re-crawled URLs) plus edge cases: dead letters of each stage, two records with one
``doc_key`` and different texts (one MinHash node), two byte-identical records, empty texts."""

from __future__ import annotations

import copy
import itertools
from collections import Counter

import pytest
from apache_beam.metrics import Metrics

from bench import bench_dedup
from pipeline.beam import plan_steps
from pipeline.dedup import fused, packed
from pipeline.dedup.fused import FusedDedup
from pipeline.dedup.keys import METRICS_NAMESPACE
from pipeline.dedup.local import run_dedup
from pipeline.dedup.stages import (
    ExactDedupParams, ExactDedupStage, MinhashDedupParams, MinhashDedupStage, SubstringDedupParams,
    SubstringDedupStage, UrlDedupParams, UrlDedupStage,
)
from pipeline.document import make_document
from pipeline.paths import require_shared

from tests.bench.test_bench_dedup_baseline import _sorted


@pytest.fixture(scope="module")
def corpus():
    require_shared("cc", "cc-main-2019-30-extracted.jsonl.gz")
    docs, _ = bench_dedup.build_corpus(300, 0.45, seed=5)
    edge = [
        make_document(id="empty-1", text="", url=None, source="edge", record_offset=0),
        make_document(id="empty-2", text="  ", url="", source="edge", record_offset=1),
        make_document(id="bad-text", text="x", url="http://edge.example/c", source="edge", record_offset=4),
        make_document(id="bad-url", text=docs[3]["text"] + " and more", url="http://x/", source="edge", record_offset=5),
        make_document(id="twin", text=docs[7]["text"] + " one", source="edge", record_offset=7),
        make_document(id="twin", text=docs[7]["text"] + " two", source="edge", record_offset=7),
        make_document(id="same", text=docs[9]["text"], url="http://same.example/", source="edge", record_offset=9),
        make_document(id="same", text=docs[9]["text"], url="http://same.example/", source="edge", record_offset=9),
        # a corpus page's URL (fragment and host case aside) over other texts: URL dedup material in every order
        make_document(id="recrawl-1", text="Another text entirely, crawled again under a known address.",
                      url=docs[5]["url"].replace("http://site", "http://SITE") + "#frag", source="edge", record_offset=10),
        make_document(id="recrawl-2", text="A second unrelated page that a later crawl found under that address.",
                      url=docs[5]["url"], source="edge", record_offset=11),
    ]
    edge[2]["text"] = 12345  # not a string: a dead letter of whichever stage reads the text first
    edge[3]["url"] = 42  # not a string: a url_dedup dead letter (if no stage before rejected it)
    return docs + edge


def _stages(order, minhash: MinhashDedupParams, exact_keep: str = "lowest_key"):
    make = {"exact_dedup": lambda: ExactDedupStage(ExactDedupParams(keep=exact_keep)),
            "url_dedup": lambda: UrlDedupStage(UrlDedupParams()),
            "minhash_dedup": lambda: MinhashDedupStage(minhash)}
    return [make[name]() for name in order]


class _Counts:
    """A counters factory for FusedDedup whose counts land in the dedup metrics that run_dedup returns."""

    def __init__(self, stage: str):
        self.stage = stage

    def count(self, doc, what: str, reason: str = "") -> None:
        Metrics.counter(METRICS_NAMESPACE, f"funnel|{self.stage}|{what}|{reason}").inc()


def _expected_funnel(order, n: int, rejected) -> dict:
    """The chain's funnel: a stage sees what the stages before it kept, and rejects what its reasons name."""
    reasons = Counter(why for _, why in rejected)
    funnel, seen = {}, n
    for name in order:
        funnel[f"funnel|{name}|in|"] = seen
        for why, count in reasons.items():
            if why.startswith(name + ":"):
                funnel[f"funnel|{name}|rejected|{why}"] = count
                seen -= count
        funnel[f"funnel|{name}|kept|"] = seen
    return {k: v for k, v in funnel.items() if v}


@pytest.mark.parametrize("order", list(itertools.permutations(["exact_dedup", "url_dedup", "minhash_dedup"])),
                         ids=lambda o: "-".join(n.split("_")[0] for n in o))
def test_fused_dedup_decides_as_the_chained_stages_in_every_order(corpus, order):
    minhash = MinhashDedupParams(preset="fineweb", shards=5)
    chained = _sorted(*run_dedup(bench_dedup.Dedup(_stages(order, minhash)), copy.deepcopy(corpus))[:2])
    kept, rejected, metrics = run_dedup(FusedDedup(_stages(order, minhash), counters=_Counts), copy.deepcopy(corpus))
    got = _sorted(kept, rejected)
    reasons = Counter(why for _, why in chained[1])
    assert reasons["exact_dedup:duplicate"] >= 1 and reasons["url_dedup:duplicate"] >= 1
    assert reasons["minhash_dedup:duplicate"] >= 1 and reasons[order[0] + ":duplicate"] >= 10
    assert sum(c for why, c in reasons.items() if why.endswith(":duplicate")) >= 80
    assert sum(c for why, c in reasons.items() if ":error:" in why) == 2  # each order has its dead letters
    assert got[0] == chained[0]  # kept documents, with every column the stages write
    assert got[1] == chained[1]  # (document, reason) of every rejection
    funnel = {k: v for k, v in metrics.items() if k.startswith("funnel|")}
    assert funnel == _expected_funnel(order, len(corpus), chained[1])


@pytest.mark.parametrize("minhash,exact_keep", [
    (MinhashDedupParams(preset="dclm", verify=True, keep="longest", shards=3), "earliest_date"),
    (MinhashDedupParams(preset="refinedweb", keep="earliest_date"), "longest"),
], ids=["dclm-verify-longest", "refinedweb-earliest"])
def test_fused_dedup_with_verification_and_keep_rules(corpus, minhash, exact_keep):
    order = ["exact_dedup", "url_dedup", "minhash_dedup"]
    chained = _sorted(*run_dedup(bench_dedup.Dedup(_stages(order, minhash, exact_keep)), copy.deepcopy(corpus))[:2])
    kept, rejected, metrics = run_dedup(FusedDedup(_stages(order, minhash, exact_keep)), copy.deepcopy(corpus))
    assert _sorted(kept, rejected) == chained
    if minhash.verify:
        assert metrics.get("minhash_dedup|false_positive_edges", 0) > 0


@pytest.mark.parametrize("normalization", ["whitespace", "none"])
def test_fused_dedup_with_exact_keys_of_other_normalizations(corpus, normalization):
    # only the full normalization shares MinHash's normalized words; the others keep their own key
    def stages():
        return [MinhashDedupStage(MinhashDedupParams(preset="fineweb", shards=4)), UrlDedupStage(UrlDedupParams()),
                ExactDedupStage(ExactDedupParams(normalization=normalization))]

    docs = copy.deepcopy(corpus)
    docs.append(make_document(id="spaced", text=docs[11]["text"].replace(" ", "  "), source="edge", record_offset=12))
    chained = _sorted(*run_dedup(bench_dedup.Dedup(stages()), copy.deepcopy(docs))[:2])
    kept, rejected, _ = run_dedup(FusedDedup(stages()), copy.deepcopy(docs))
    assert _sorted(kept, rejected) == chained
    assert any(why.startswith("minhash_dedup:") for _, why in chained[1])


def test_fused_dedup_on_two_worker_processes_decides_as_the_chain(corpus):
    order = ["exact_dedup", "url_dedup", "minhash_dedup"]
    minhash = MinhashDedupParams(preset="fineweb")
    chained = _sorted(*run_dedup(bench_dedup.Dedup(_stages(order, minhash)), copy.deepcopy(corpus))[:2])
    workers = ["--direct_num_workers=2", "--direct_running_mode=multi_processing"]  # pickled DoFns, two processes
    assert _sorted(*run_dedup(FusedDedup(_stages(order, minhash)), copy.deepcopy(corpus), workers)[:2]) == chained


def test_batch_sizes_never_change_what_fused_dedup_keeps(corpus, monkeypatch):
    order = ["url_dedup", "minhash_dedup", "exact_dedup"]
    minhash = MinhashDedupParams(preset="fineweb", shards=4)
    whole = _sorted(*run_dedup(FusedDedup(_stages(order, minhash)), copy.deepcopy(corpus))[:2])
    monkeypatch.setattr(packed, "RECORD_BATCH_BYTES", 1)  # every record its own batch
    monkeypatch.setattr(packed, "COLUMN_BATCH_RECORDS", 1)
    monkeypatch.setattr(fused, "DOC_BATCH_BYTES", 1)
    assert _sorted(*run_dedup(FusedDedup(_stages(order, minhash)), copy.deepcopy(corpus))[:2]) == whole


def test_the_graph_fuses_only_consecutive_fusable_dedup_stages():
    exact, url = ExactDedupStage(ExactDedupParams()), UrlDedupStage(UrlDedupParams())
    minhash, substring = MinhashDedupStage(MinhashDedupParams()), SubstringDedupStage(SubstringDedupParams())
    names = [[s.name for s in step.stages] for step in plan_steps([exact, minhash, substring, url], spread=False)]
    assert names == [["exact_dedup", "minhash_dedup"], ["substring_dedup"], ["url_dedup"]]
    with pytest.raises(ValueError, match="cannot be fused"):
        FusedDedup([exact, substring])
