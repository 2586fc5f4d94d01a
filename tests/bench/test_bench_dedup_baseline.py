"""bench_dedup's plain-loop baseline (``plain_dedup``) keeps exactly what the Beam dedup stages keep.

The benchmark's ``--baseline`` compares Beam's exact_dedup -> url_dedup -> minhash_dedup with a plain
single-process loop; that comparison only means something if both make the same decisions. Here both run
on a few hundred documents of the benchmark's synthetic near-duplicate corpus (real sentences, chains of
edited copies, case-only copies, re-crawled URLs) plus edge cases, and must return the same kept
documents (columns included) and the same (document, reason) rejections."""

from __future__ import annotations

import copy
import json
from collections import Counter

import pytest

from pipeline.paths import require_shared
from pipeline.dedup.local import run_dedup
from pipeline.dedup.stages import (
    ExactDedupParams, ExactDedupStage, MinhashDedupParams, MinhashDedupStage, UrlDedupParams, UrlDedupStage,
)
from pipeline.document import doc_key, make_document

from bench import bench_dedup


@pytest.fixture(scope="module")
def corpus():
    require_shared("cc", "cc-main-2019-30-extracted.jsonl.gz")
    docs, _ = bench_dedup.build_corpus(300, 0.45, seed=11)
    edge = [
        make_document(id="empty-1", text="", url=None, source="edge", record_offset=0),
        make_document(id="empty-2", text="  ", url="", source="edge", record_offset=1),
        make_document(id="short-1", text="Three words only.", url="http://edge.example/a", source="edge", record_offset=2),
        make_document(id="short-2", text="THREE words only!", url="http://edge.example/b", source="edge", record_offset=3),
        make_document(id="bad-text", text="x", url="http://edge.example/c", source="edge", record_offset=4),
        make_document(id="bad-url", text="A page whose URL field is a number, not a string.", url="http://x/",
                      source="edge", record_offset=5),
        # the same URL as a corpus page (fragment and host case aside), no crawl date: loses to any dated copy
        make_document(id="recrawl", text="Another text entirely, crawled again under a known address.",
                      url=docs[5]["url"].replace("http://site", "http://SITE") + "#frag", source="edge", record_offset=6),
        # two records with one doc_key (one MinHash node), different texts: kept or rejected together
        make_document(id="twin", text=docs[7]["text"] + " one", source="edge", record_offset=7),
        make_document(id="twin", text=docs[7]["text"] + " two", source="edge", record_offset=7),
    ]
    edge[4]["text"] = 12345  # not a string: an exact_dedup dead letter
    edge[5]["url"] = 42  # not a string: a url_dedup dead letter
    return docs + edge


def _sorted(kept, rejected):
    kept = sorted(kept, key=lambda d: (doc_key(d), json.dumps(d, sort_keys=True)))
    rejected = sorted(([d, r] for d, r in rejected), key=lambda pr: (doc_key(pr[0]), pr[1], json.dumps(pr[0], sort_keys=True)))
    return kept, rejected


@pytest.mark.parametrize("minhash", [
    MinhashDedupParams(preset="fineweb"),
    MinhashDedupParams(preset="refinedweb"),
    MinhashDedupParams(preset="dclm", verify=True, keep="longest"),
], ids=["fineweb", "refinedweb", "dclm-verify-longest"])
@pytest.mark.parametrize("share_words", [True, False], ids=["words-once", "words-per-stage"])
def test_plain_loop_keeps_exactly_what_the_beam_stages_keep(corpus, minhash, share_words):
    exact, url = ExactDedupParams(), UrlDedupParams()
    stages = [ExactDedupStage(exact), UrlDedupStage(url), MinhashDedupStage(minhash)]
    beam_kept, beam_rejected, metrics = run_dedup(bench_dedup.Dedup(stages), corpus)
    loop_kept, loop_rejected = bench_dedup.plain_dedup(copy.deepcopy(corpus), exact, url, minhash, share_words=share_words)

    # the corpus exercises every rule the comparison relies on
    reasons = Counter(r for _, r in beam_rejected)
    assert reasons["exact_dedup:duplicate"] >= 10 and reasons["url_dedup:duplicate"] >= 5
    assert reasons["minhash_dedup:duplicate"] >= 50
    assert reasons["exact_dedup:error:TypeError"] == 1 and reasons["url_dedup:error:TypeError"] == 1
    assert max(d["minhash_cluster_size"] for d in beam_kept) >= 3
    if minhash.verify:
        assert metrics.get("minhash_dedup|false_positive_edges", 0) > 0

    beam_kept, beam_rejected = _sorted(beam_kept, beam_rejected)
    loop_kept, loop_rejected = _sorted(loop_kept, loop_rejected)
    assert [doc_key(d) for d in loop_kept] == [doc_key(d) for d in beam_kept]
    assert loop_kept == beam_kept  # the stages' columns too: group sizes, minhash_cluster(_size)
    assert loop_rejected == beam_rejected
