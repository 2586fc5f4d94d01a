"""Exact-substring dedup: window fingerprints, cutting, and the Beam stage on real text."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

from pipeline.paths import require_shared
from pipeline.dedup.local import run_dedup
from pipeline.dedup.keys import node_id
from pipeline.dedup.stages import SubstringDedupParams, SubstringDedupStage
from pipeline.dedup.substring import cut_windows, later_occurrences, text_windows, token_offsets
from pipeline.document import doc_key, make_document
from pipeline.stages.base import ParamError


@pytest.fixture(scope="module")
def words():
    """A long run of real English words (whitespace tokens) from the shared CC extract."""
    path = require_shared("cc", "cc-main-2019-30-extracted.jsonl.gz")
    out = []
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            out.extend(json.loads(line)["text"].split())
            if len(out) > 3000:
                break
    return out


def test_tokens_are_runs_of_non_space_bytes():
    text = "a  b\tc\u00a0d\né ü\u3000x"
    buf = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
    starts, ends = token_offsets(buf)
    data = text.encode("utf-8")
    assert [data[s:e].decode() for s, e in zip(starts, ends)] == ["a", "b", "c", "d", "é", "ü\u3000x"]
    assert token_offsets(np.frombuffer(b"", dtype=np.uint8))[0].size == 0


def test_window_fingerprints_ignore_spacing_but_not_tokens(words):
    a = " ".join(words[:60])
    b = "\n".join(words[:60])
    c = " ".join(words[:59] + ["different"])
    _, _, _, wa = text_windows(a, 50)
    _, _, _, wb = text_windows(b, 50)
    _, _, _, wc = text_windows(c, 50)
    assert len(wa) == 11 and wa == wb
    assert wa[:10] == wc[:10] and wa[10] != wc[10]
    assert len(set(wa)) == 11  # real text: every window distinct
    assert text_windows(" ".join(words[:49]), 50)[3] == []


def test_cut_windows_removes_marked_spans_and_internal_repeats(words):
    own, span, rest = words[:30], words[100:160], words[300:340]
    text = " ".join(own + span + rest)
    # mark every window that lies inside the 60-token span (positions 30..40)
    new, removed = cut_windows(text, 50, range(30, 41))
    assert removed == 60
    assert new == " ".join(own + rest)
    assert cut_windows(text, 50, []) == (text, 0)
    # a span repeated inside one document: the second copy goes, the first stays
    repeated = " ".join(own + span + rest + span)
    new, removed = cut_windows(repeated, 50, [])
    assert removed == 60 and new == " ".join(own + span + rest)


def test_later_occurrences_keep_the_smallest_node():
    a, b, c = b"\x01" * 16, b"\x02" * 16, b"\x03" * 16
    marks = sorted(later_occurrences((b"fp", [(c, 5), (a, 7), (b, 0), (b, 9)])))
    assert marks == [(b, 0), (c, 5)]
    assert list(later_occurrences((b"fp", [(a, 1), (a, 4)]))) == []  # one document: handled locally


def test_substring_dedup_stage_on_beam(words):
    span = words[1000:1060]  # a 60-token span shared by several documents
    docs = []
    for i in range(4):
        own = words[i * 200 : i * 200 + 80]
        docs.append(make_document(id=f"has-span-{i}", text=" ".join(own[:40] + span + own[40:]), source="s", record_offset=i))
    docs.append(make_document(id="only-span", text="Header: " + " ".join(span) + " end", source="s", record_offset=10))
    inner = words[2000:2070]
    docs.append(make_document(id="self-repeat", text=" ".join(inner + words[2100:2130] + inner), source="s", record_offset=11))
    docs.append(make_document(id="unique", text=" ".join(words[2500:2700]), source="s", record_offset=12))
    docs.append(make_document(id="short", text="too few tokens to have any window", source="s", record_offset=13))
    docs.append(make_document(id="bad", text=None, source="s", record_offset=14))
    docs[-1]["text"] = ["not", "text"]

    params = SubstringDedupParams()
    params.validate()
    kept, rejected, metrics = run_dedup(SubstringDedupStage(params).beam_transform(), docs)
    assert len(kept) + len(rejected) == len(docs)
    by_id = {d["id"]: d for d in kept}
    reasons = {d["id"]: r for d, r in rejected}

    holders = [d for d in docs if d["id"].startswith("has-span") or d["id"] == "only-span"]
    first = min(holders, key=lambda d: node_id(doc_key(d)))  # the documented order: node id
    span_text = " ".join(span)
    for d in holders:
        if d is first:
            assert span_text in by_id[d["id"]]["text"] and by_id[d["id"]]["substring_dedup_removed_tokens"] == 0
        elif d["id"] == "only-span":
            assert reasons["only-span"] == "substring_dedup:too_short"  # "Header: end" is 11 characters
        else:
            out = by_id[d["id"]]
            assert span_text not in out["text"] and out["substring_dedup_removed_tokens"] == 60
            own = words[int(d["id"][-1]) * 200 :][:80]
            assert out["text"] == " ".join(own)
    assert by_id["self-repeat"]["text"] == " ".join(inner + words[2100:2130])
    assert by_id["self-repeat"]["substring_dedup_removed_tokens"] == 70
    assert by_id["unique"]["text"] == docs[6]["text"] and by_id["unique"]["substring_dedup_removed_tokens"] == 0
    assert by_id["short"]["substring_dedup_removed_tokens"] == 0
    assert reasons["bad"] == "substring_dedup:error:TypeError"
    assert metrics["substring_dedup|removed_tokens"] == sum(d["substring_dedup_removed_tokens"] for d in kept) + 60 * (first["id"] != "only-span")


def test_substring_params_validation():
    with pytest.raises(ParamError):
        SubstringDedupParams(min_tokens=1).validate()
    with pytest.raises(ParamError):
        SubstringDedupParams(min_chars=-1).validate()


def _planted_corpus(words, k, seed, n_docs=40):
    """Real-text documents with spans of k-1, k, k+1, 2k and 3k+7 tokens planted in several documents (and
    twice in some), overlapping and at the edges, plus spacing changes that must not matter."""
    import random

    rng = random.Random(seed)
    spans = [words[rng.randrange(len(words) - 200):][:n] for n in (k - 1, k, k + 1, 2 * k, 3 * k + 7)]
    docs = []
    for i in range(n_docs):
        start = rng.randrange(len(words) - 300)
        body = words[start:start + rng.randrange(k // 2, 4 * k)]
        for _ in range(rng.randrange(0, 4)):
            span = rng.choice(spans)
            cut = rng.randrange(len(span) // 2 + 1) if rng.random() < 0.3 else 0  # partial overlaps
            at = rng.randrange(len(body) + 1)
            body = body[:at] + span[cut:] + body[at:]
        sep = "\n" if rng.random() < 0.2 else " "
        docs.append(make_document(id=f"d{i}", text=sep.join(body), source="s", record_offset=i))
    return docs


@pytest.mark.parametrize("k,seed", [(8, 1), (8, 2), (50, 3), (50, 4)])
def test_winnowed_candidates_give_exactly_the_exhaustive_result(words, k, seed):
    docs = _planted_corpus(words, k, seed)
    results = {}
    for mode in ("all", "winnow"):
        params = SubstringDedupParams(min_tokens=k, candidates=mode)
        params.validate()
        kept, rejected, metrics = run_dedup(SubstringDedupStage(params).beam_transform(), docs)
        results[mode] = (sorted((d["id"], d["text"], d["substring_dedup_removed_tokens"]) for d in kept),
                         sorted((d["id"], r) for d, r in rejected), metrics)
    assert results["winnow"][:2] == results["all"][:2]
    cut_docs = sum(1 for _, _, removed in results["all"][0] if removed) + len(results["all"][1])
    assert cut_docs >= 5  # the planted spans really were cut
    metrics = results["winnow"][2]
    total_windows = sum(max(0, len(d["text"].split()) - k + 1) for d in docs)
    assert 0 < metrics["substring_dedup|windows_shuffled"] < total_windows
    assert 0 < metrics["substring_dedup|candidate_documents"] <= len(docs)


def test_winnowing_chooses_one_anchor_per_run_and_the_same_in_both_copies(words):
    from pipeline.dedup.substring import anchor_params, candidate_windows, text_anchors

    k = 50
    q, w = anchor_params(k)
    assert (q, w) == (25, 26) and q + w - 1 == k
    span = words[500:500 + k]
    a = " ".join(words[:37] + span + words[900:950])
    b = " ".join(words[1200:1203] + span)
    hq_a, anchors_a = text_anchors(a, k)
    hq_b, anchors_b = text_anchors(b, k)
    shared = np.intersect1d(anchors_a, anchors_b)
    assert shared.size >= 1  # the shared span guarantees a common anchor
    assert anchors_a.size < 0.2 * hq_a.size  # winnowing keeps ~2/(w+1) of the q-grams
    mask_a = candidate_windows(hq_a, shared, k, len(text_windows(a, k)[3]))
    mask_b = candidate_windows(hq_b, shared, k, len(text_windows(b, k)[3]))
    assert mask_a[37] and mask_b[3]  # the span's window is a candidate in both documents
    assert mask_a.sum() <= w * shared.size
    assert text_anchors(" ".join(words[:k - 1]), k)[1].size == 0


def test_substring_candidates_param_is_validated():
    with pytest.raises(ParamError, match="candidates"):
        SubstringDedupParams(candidates="some").validate()
