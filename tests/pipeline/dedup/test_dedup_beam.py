"""Dedup stages as Beam transforms on the in-process runner: MinHash clusters, connected components,
exact and URL dedup. Inputs are built from real Common Crawl text with controlled edits."""

from __future__ import annotations

import gzip
import json
import os
import random
import tempfile
from collections import defaultdict

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.runners.portability.fn_api_runner import FnApiRunner

from pipeline.paths import require_shared
from pipeline.dedup import packed
from pipeline.dedup.keys import node_id
from pipeline.dedup.local import run_dedup
from pipeline.dedup.minhash import graph
from pipeline.dedup.minhash.banding import star_edges
from pipeline.dedup.minhash.components import ConnectedComponents
from pipeline.dedup.minhash import MinHasher, band_keys, jaccard_of_hash_sets, resolve_preset
from pipeline.dedup.normalize import normalize_text
from pipeline.dedup.stages import ExactDedupParams, ExactDedupStage, MinhashDedupParams, MinhashDedupStage, UrlDedupParams, UrlDedupStage
from pipeline.document import doc_key, make_document
from pipeline.stages.base import STAGES, ParamError

TWO_WORKERS = ["--direct_num_workers=2", "--direct_running_mode=multi_processing"]


@pytest.fixture(scope="module")
def cc_docs():
    path = require_shared("cc", "cc-main-2019-30-extracted.jsonl.gz")
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def fresh_word(rng):
    return "".join(rng.choice("bcdfghjklmnpqrstvwxz") for _ in range(9))


def build_minhash_corpus(cc_docs):
    """Chain c0~c1~...~c8 (c0 and c8 far apart), near-duplicate pairs, unrelated pages, edge cases."""
    rng = random.Random(7)
    long_texts = [normalize_text(d["text"]).split() for d in cc_docs]
    long_texts = [w for w in long_texts if len(w) >= 700 and len(set(w)) > 300]
    docs = []
    base = long_texts[0][:600]
    chain = list(base)
    for i in range(9):  # c_i = base with blocks 0..i-1 (30 words each) replaced by fresh words
        if i:
            for j in range((i - 1) * 30, i * 30):
                chain[j] = fresh_word(rng)
        docs.append(make_document(id=f"chain-{i}", text=" ".join(chain), url=f"http://chain.example/{i}", source="chain", record_offset=i))
    for p, words in enumerate(long_texts[1:6]):  # near-duplicate pairs (Jaccard ~0.9)
        words = words[:500]
        variant = list(words)
        for j in range(0, len(variant), 100):
            variant[j + 7] = fresh_word(rng)
        docs.append(make_document(id=f"pair-{p}-a", text=" ".join(words), source="pairs", record_offset=2 * p))
        docs.append(make_document(id=f"pair-{p}-b", text=" ".join(variant), source="pairs", record_offset=2 * p + 1))
    for k, d in enumerate(cc_docs[100:130]):  # real pages as they are
        docs.append(make_document(id=d["id"], text=d["text"], url=d["metadata"].get("url"), source="cc", record_offset=k,
                                  warc_date=d["metadata"].get("warc_date")))
    docs.append(make_document(id="empty", text="", source="edge", record_offset=0))
    docs.append(make_document(id="short", text="Three words only.", source="edge", record_offset=1))
    docs.append(make_document(id="short", text="Three words only.", source="edge-copy", record_offset=1))  # same id, other key
    return docs


def reference_clusters(docs, preset, max_members=None):
    """Union-find over pairs sharing a band bucket: {frozenset of doc_keys} of clusters with >= 2 docs."""
    hasher = MinHasher(preset.num_perm, seed=1)
    parent = {}

    def find(x):
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    buckets = defaultdict(list)
    for d in docs:
        key = doc_key(d)
        find(key)
        hashes = hasher.shingle_hashes(d["text"])
        if hashes.size:
            for b in band_keys(hasher.signature_of_hashes(hashes), preset.bands, preset.rows):
                buckets[b].append(key)
    for members in buckets.values():
        for m in members[1:]:
            parent[find(m)] = find(members[0])
    groups = defaultdict(set)
    for key in parent:
        groups[find(key)].add(key)
    return {frozenset(g) for g in groups.values() if len(g) > 1}


def clusters_of(kept, rejected):
    groups = defaultdict(list)
    for d in kept:
        groups[d["minhash_cluster"]].append((d, True))
    for d, _ in rejected:
        groups[d["minhash_cluster"]].append((d, False))
    return groups


def test_minhash_dedup_clusters_chains_and_is_deterministic_across_workers(cc_docs):
    docs = build_minhash_corpus(cc_docs)
    params = MinhashDedupParams(preset="fineweb", max_rounds=3)
    params.validate()
    stage = MinhashDedupStage(params)
    kept, rejected, metrics = run_dedup(stage.beam_transform(), docs)

    # accounting: every document leaves exactly once, as kept or rejected(duplicate)
    assert len(kept) + len(rejected) == len(docs)
    assert sorted(map(doc_key, kept + [d for d, _ in rejected])) == sorted(map(doc_key, docs))
    assert {r for _, r in rejected} == {"minhash_dedup:duplicate"}

    # one kept document per cluster: the lowest doc_key; cluster and size recorded on every document
    groups = clusters_of(kept, rejected)
    for rep, members in groups.items():
        assert sum(k for _, k in members) == 1
        keys = sorted(doc_key(d) for d, _ in members)
        assert rep == keys[0] == next(doc_key(d) for d, k in members if k)
        assert all(d["minhash_cluster_size"] == len(members) for d, _ in members)

    # the clusters are exactly the connected components of the LSH candidate graph
    preset = params.lsh()
    expected = reference_clusters(docs, preset)
    got = {frozenset(doc_key(d) for d, _ in m) for m in groups.values() if len(m) > 1}
    assert got == expected

    # the chain is one cluster although its ends are not candidates of each other
    by_id = {d["id"]: d for d in docs}
    hasher = MinHasher(preset.num_perm, seed=1)
    ends = [band_keys(hasher.signature(by_id[i]["text"]), preset.bands, preset.rows) for i in ("chain-0", "chain-8")]
    assert not any(a == b for a, b in zip(*ends))
    chain_keys = {doc_key(by_id[f"chain-{i}"]) for i in range(9)}
    assert any(chain_keys <= c for c in got)
    for p in range(5):
        assert any({doc_key(by_id[f"pair-{p}-a"]), doc_key(by_id[f"pair-{p}-b"])} <= c for c in got)
    assert sum(d["minhash_cluster_size"] == 1 for d in kept) >= 20  # most real pages are unique
    assert metrics.get("minhash_dedup|cc_rounds_needed", 0) >= 1
    assert metrics.get("minhash_dedup|cc_unconverged_nodes", 0) == 0
    no_words = [d["id"] for d in docs if hasher.shingle_hashes(d["text"]).size == 0]
    assert "empty" in no_words and metrics["minhash_dedup|no_shingles"] == len(no_words)

    # the same result, byte for byte, with two worker processes (a second, differently parallel run)
    kept2, rejected2, _ = run_dedup(MinhashDedupStage(params).beam_transform(), list(reversed(docs)), TWO_WORKERS)
    assert json.dumps(kept2, sort_keys=True) == json.dumps(kept, sort_keys=True)
    assert json.dumps(rejected2, sort_keys=True) == json.dumps(rejected, sort_keys=True)


def test_minhash_dedup_refinedweb_preset_with_verification(cc_docs):
    rng = random.Random(3)
    hasher = MinHasher(1)
    texts, sets = [], []
    for words in (normalize_text(d["text"]).split()[:400] for d in cc_docs):
        hashes = hasher.shingle_hashes(" ".join(words))
        if len(words) == 400 and all(jaccard_of_hash_sets(hashes, other) < 0.2 for other in sets):
            texts.append(words)
            sets.append(hashes)
        if len(texts) == 6:
            break
    docs = []
    for i, words in enumerate(texts):
        docs.append(make_document(id=f"d{i}", text=" ".join(words), source="s", record_offset=2 * i, warc_date=f"2019-0{i + 1}"))
        if i < 3:  # an edited copy, newer
            variant = list(words)
            for j in range(0, 400, 80):
                variant[j] = fresh_word(rng)
            docs.append(make_document(id=f"d{i}-copy", text=" ".join(variant), source="s", record_offset=2 * i + 1, warc_date="2018-12"))
    params = MinhashDedupParams(preset="refinedweb", max_rounds=3, verify=True, verify_threshold=0.8, keep="earliest_date")
    params.validate()
    kept, rejected, metrics = run_dedup(MinhashDedupStage(params).beam_transform(), docs)
    assert sorted(d["id"] for d, _ in rejected) == ["d0", "d1", "d2"]  # the copies are older: they stay
    assert {d["id"] for d in kept} == {"d0-copy", "d1-copy", "d2-copy", "d3", "d4", "d5"}
    assert metrics["minhash_dedup|verified_edges"] >= 3
    assert metrics.get("minhash_dedup|false_positive_edges", 0) == 0


def test_verification_removes_lsh_false_positives(cc_docs):
    # a loose banding (40 x 2, threshold ~0.16) makes a pair with Jaccard ~0.5 a sure candidate;
    # verification at 0.8 must split it while keeping a true near-duplicate pair (Jaccard ~0.9)
    rng = random.Random(5)
    texts = [w[:300] for w in (normalize_text(d["text"]).split() for d in cc_docs) if len(w) >= 300][:2]
    docs = []
    for i, (words, every) in enumerate(zip(texts, (60, 14))):
        variant = list(words)
        for j in range(0, len(variant), every):
            variant[j] = fresh_word(rng)
        docs.append(make_document(id=f"p{i}-a", text=" ".join(words), source="v", record_offset=2 * i))
        docs.append(make_document(id=f"p{i}-b", text=" ".join(variant), source="v", record_offset=2 * i + 1))
    hasher = MinHasher(1)
    sims = [jaccard_of_hash_sets(hasher.shingle_hashes(docs[2 * i]["text"]), hasher.shingle_hashes(docs[2 * i + 1]["text"])) for i in range(2)]
    assert sims[0] > 0.85 and 0.3 < sims[1] < 0.7
    assert jaccard_of_hash_sets(hasher.shingle_hashes(docs[0]["text"]), hasher.shingle_hashes(docs[2]["text"])) < 0.02
    base = dict(preset="fineweb", bands=40, rows=2, max_rounds=3)
    _, rejected, _ = run_dedup(MinhashDedupStage(MinhashDedupParams(**base)).beam_transform(), docs)
    assert sorted(d["id"] for d, _ in rejected) == ["p0-b", "p1-b"]
    _, rejected, metrics = run_dedup(MinhashDedupStage(MinhashDedupParams(**base, verify=True)).beam_transform(), docs)
    assert sorted(d["id"] for d, _ in rejected) == ["p0-b"]
    assert metrics["minhash_dedup|false_positive_edges"] == 1 and metrics["minhash_dedup|verified_edges"] == 1


def test_star_edges_are_linear_in_bucket_size():
    members = [i.to_bytes(16, "big") for i in range(1000)]
    edges = list(star_edges((b"bucket", members + members[:10])))
    assert len(edges) == 999
    assert {v for _, v in edges} == {members[0]}


def run_components(edges_sets, max_rounds, on_unconverged="fail"):
    """Run ConnectedComponents on several edge lists in one pipeline; returns [{node: root}] and metrics."""
    from pipeline.dedup.local import dedup_metrics

    with tempfile.TemporaryDirectory() as tmp:
        p = beam.Pipeline(runner=FnApiRunner())
        for i, edges in enumerate(edges_sets):
            (
                p
                | f"Edges{i}" >> beam.Create(edges, reshuffle=True)
                | f"CC{i}" >> ConnectedComponents(max_rounds, on_unconverged, name=f"cc{i}")
                | f"Hex{i}" >> beam.MapTuple(lambda u, r: json.dumps([u.hex(), r.hex()]))
                | f"Write{i}" >> beam.io.WriteToText(os.path.join(tmp, f"out{i}"))
            )
        result = p.run()
        result.wait_until_finish()
        outs = []
        for i in range(len(edges_sets)):
            labels = {}
            for name in sorted(os.listdir(tmp)):
                if name.startswith(f"out{i}"):
                    with open(os.path.join(tmp, name)) as fh:
                        for line in fh:
                            u, r = json.loads(line)
                            assert u not in labels  # one label per node
                            labels[u] = r
            outs.append(labels)
        return outs, dedup_metrics(result)


def union_find_roots(edges):
    parent = {}

    def find(x):
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for u, v in edges:
        ru, rv = find(u), find(v)
        if ru != rv:
            parent[max(ru, rv)] = min(ru, rv)
    return {n.hex(): find(n).hex() for n in parent}


def random_graph(rng):
    edges = []
    for length in list(range(1, 40)) + [120]:  # paths in random id order: the slowest shape
        nodes = [rng.randbytes(16) for _ in range(length + 1)]
        edges += list(zip(nodes, nodes[1:]))
    for size in (3, 30):  # stars and a clique
        nodes = [rng.randbytes(16) for _ in range(size)]
        edges += [(nodes[0], n) for n in nodes[1:]]
    clique = [rng.randbytes(16) for _ in range(8)]
    edges += [(a, b) for a in clique for b in clique if a < b]
    edges += [(edges[0][1], edges[0][0])] * 3  # duplicates and reversed duplicates
    rng.shuffle(edges)
    return edges


def test_connected_components_match_union_find_and_report_convergence():
    graph = random_graph(random.Random(11))
    (labels,), metrics = run_components([graph], max_rounds=10)
    assert labels == union_find_roots(graph)
    # converged after <= 6 rounds, so round 7's count is 0 and the routers of rounds 9 and 10 (which read
    # the count of the round two before theirs) sent the edges around their stars: the bypass path is part
    # of what matched union-find above
    assert 2 <= metrics["cc0|cc_rounds_needed"] <= 6
    assert metrics.get("cc0|cc_unconverged_nodes", 0) == 0


def test_connected_components_fail_loudly_when_not_converged():
    chain = [bytes([0]) * 15 + bytes([i]) for i in range(40)]
    with pytest.raises(Exception, match="did not converge in max_rounds=1"):
        run_components([list(zip(chain, chain[1:]))], max_rounds=1)
    (partial,), metrics = run_components([list(zip(chain, chain[1:]))], max_rounds=1, on_unconverged="continue")
    assert metrics["cc0|cc_unconverged_nodes"] > 0
    assert set(partial) == {n.hex() for n in chain}
    index = {n.hex(): i for i, n in enumerate(chain)}
    assert all(index[r] <= index[u] for u, r in partial.items())  # a label is the node or a smaller one
    assert len(set(partial.values())) > 1  # partial: more than one group


class ExactThenUrl(beam.PTransform):
    def expand(self, docs):
        kept, rej1 = docs | "Exact" >> ExactDedupStage(ExactDedupParams()).beam_transform()
        kept, rej2 = kept | "Url" >> UrlDedupStage(UrlDedupParams()).beam_transform()
        return kept, (rej1, rej2) | beam.Flatten()


def test_exact_and_url_dedup_keep_exactly_one_per_group(cc_docs):
    texts = [d["text"] for d in cc_docs[:6]]
    docs = []
    # exact group: same text up to case, punctuation, digits and spacing (the "full" normalization)
    docs.append(make_document(id="e1", text=texts[0], url="http://a.example/1", source="s", record_offset=5))
    docs.append(make_document(id="e2", text=texts[0].upper().replace(" ", "  "), url="http://a.example/2", source="s", record_offset=3))
    docs.append(make_document(id="e3", text=texts[0].replace(".", "!").replace("1", "7"), url="http://a.example/3", source="s", record_offset=9))
    docs.append(make_document(id="x", text=texts[1], url="http://b.example/x", source="s", record_offset=1))
    # URL group: different texts, same page (fragment and host case ignored); the earliest crawl stays
    docs.append(make_document(id="u1", text=texts[2], url="http://C.example/page#top", source="s", record_offset=2, warc_date="2020-01-01T00:00:00Z"))
    docs.append(make_document(id="u2", text=texts[3], url="http://c.example/page", source="s", record_offset=4, warc_date="2019-06-01T00:00:00Z"))
    docs.append(make_document(id="u3", text=texts[4], url=" http://c.example/page ", source="s", record_offset=6, warc_date=None))
    docs.append(make_document(id="n1", text=texts[5], url=None, source="s", record_offset=7))
    docs.append(make_document(id="n2", text=texts[5] + " different", url="", source="s", record_offset=8))
    docs.append(make_document(id="bad", text=None, url="http://d.example/", source="s", record_offset=10))
    docs[-1]["text"] = 12345  # not a string: a dead letter, not a crash
    kept, rejected, _ = run_dedup(ExactThenUrl(), docs)
    assert len(kept) + len(rejected) == len(docs)
    by_reason = defaultdict(set)
    for d, r in rejected:
        by_reason[r].add(d["id"])
    lowest = min((d for d in docs if d["id"] in ("e1", "e2", "e3")), key=doc_key)["id"]
    assert by_reason["exact_dedup:duplicate"] == {"e1", "e2", "e3"} - {lowest}
    assert by_reason["url_dedup:duplicate"] == {"u1", "u3"}
    assert by_reason["exact_dedup:error:TypeError"] == {"bad"}
    assert {d["id"] for d in kept} == {lowest, "x", "u2", "n1", "n2"}
    sizes = {d["id"]: (d.get("exact_dedup_group_size"), d.get("url_dedup_group_size")) for d in kept}
    assert sizes[lowest][0] == 3 and sizes["u2"] == (1, 3)
    assert sizes["n1"][1] is None  # no URL: not grouped


def test_dedup_stages_are_registered_with_columns():
    registry = STAGES  # pipeline.dedup.stages is imported above
    for name in ("minhash_dedup", "exact_dedup", "url_dedup", "substring_dedup"):
        cls = registry[name]
        assert cls.kind == "collection" and cls.columns
        cls.Params().validate()
    assert node_id("a") != node_id("b") and len(node_id("a")) == 16
    assert resolve_preset("dclm").num_perm == 1395


def test_packed_star_edges_match_the_per_bucket_rule():
    # random bucket entries: few distinct hashes so buckets are crowded, the same hash in two bands
    # (different buckets), repeated entries; the packed kernel must give the per-bucket star rule
    rng = random.Random(17)
    nodes = [rng.randbytes(16) for _ in range(300)]
    entries = [(rng.randrange(3), rng.choice([11, 12, 13, 2**64 - 1]), rng.choice(nodes)) for _ in range(2000)]
    entries += entries[:50]
    hi, lo = packed.nodes_to_columns([n for _, _, n in entries])
    bhash = np.array([h for _, h, _ in entries], dtype=np.uint64)
    band = np.array([b for b, _, _ in entries], dtype=np.uint16)
    blob = packed.pack_columns((bhash, hi, lo, band))
    cols = packed.unpack_columns([blob[: 26 * 0], blob], graph.BUCKET_COLUMNS)  # an empty batch is harmless
    (u_hi, u_lo, v_hi, v_lo), sizes = graph.star_edges_of_buckets(*cols)
    got = set(zip(packed.columns_to_nodes(u_hi, u_lo), packed.columns_to_nodes(v_hi, v_lo)))
    buckets = defaultdict(list)
    for b, h, n in entries:
        buckets[(b, h)].append(n)
    expected = {e for key, members in buckets.items() for e in star_edges((key, members))}
    assert got == expected and len(got) == len(u_hi)  # no repeated edge
    assert sorted(sizes.tolist()) == sorted(len(set(m)) for m in buckets.values() if len(set(m)) > 1)
    with pytest.raises(ValueError, match="whole number"):
        packed.unpack_columns(blob[:-1], graph.BUCKET_COLUMNS)


def test_packed_documents_round_trip_exactly():
    doc = make_document(id="d\ud800x", text="caf\u00e9 \U0001f600 \x00 end", url=None, source="s", record_offset=2**40,
                        warc_date="2020-01-01T00:00:00Z")
    doc.update({"score": 0.1 + 0.2, "lines": ["a", 1, None, [2.5]], "flag": True, "nested": {"k": [1, "x"]}})
    blob = packed.pack_document(doc)
    back = packed.unpack_document(blob)
    assert back == doc and [type(v) for v in back.values()] == [type(v) for v in doc.values()]
    assert b"\x80\x04" not in blob[:2] and blob.startswith(b"{")  # JSON, never a pickle
    # numpy scalars that a stage may leave behind come back as the equal Python number
    import numpy as np

    back = packed.unpack_document(packed.pack_document({"s": np.float32(0.65), "n": np.int32(7)}))
    assert back == {"s": float(np.float32(0.65)), "n": 7} and np.float32(back["s"]) == np.float32(0.65)
    with pytest.raises(TypeError, match="dedup shuffle"):
        packed.pack_document({"x": object()})


def test_minhash_dedup_results_do_not_depend_on_the_number_of_shards(cc_docs):
    docs = build_minhash_corpus(cc_docs)
    outputs = []
    for shards in (1, 7):
        params = MinhashDedupParams(preset="fineweb", max_rounds=4, shards=shards)
        params.validate()
        kept, rejected, metrics = run_dedup(MinhashDedupStage(params).beam_transform(), docs)
        outputs.append((json.dumps(kept, sort_keys=True), json.dumps(rejected, sort_keys=True), metrics["minhash_dedup|cc_nodes"]))
    assert outputs[0] == outputs[1]
    assert len(json.loads(outputs[0][1])) > 10  # something was clustered
    with pytest.raises(ParamError, match="shards"):
        MinhashDedupParams(shards=0).validate()
