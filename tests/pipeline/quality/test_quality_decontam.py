"""Benchmark decontamination (pipeline/quality/decontam.py, the ``decontaminate`` stage): the eval items are the
ones ``refinery eval`` scores, planted passages of every task are found (drop and cut), real Common Crawl text
is left alone except for genuine matches, short items are handled as documented, the index is small."""

from __future__ import annotations

import gzip
import json
import random

import numpy as np
import pytest

from pipeline.paths import require_shared
from pipeline.quality import decontam as dc
from pipeline.quality.stages import DecontaminateParams, DecontaminateStage
from pipeline.stages.base import apply_stage


@pytest.fixture(scope="module")
def eval_dir(shared_data):
    return str(shared_data / "eval")


@pytest.fixture(scope="module")
def index(eval_dir, tmp_path_factory):
    return dc.load_index(dc.DEFAULT_TASKS, 13, eval_dir, str(tmp_path_factory.mktemp("cache")))


@pytest.fixture(scope="module")
def cc_texts(shared_data):
    with gzip.open(require_shared("cc", "cc-main-2019-30-extracted.jsonl.gz"), "rt", encoding="utf-8") as fh:
        return [json.loads(line).get("text") or "" for line in fh]


def _stage(eval_dir, cache, **kw):
    stage = DecontaminateStage(DecontaminateParams(data_dir=eval_dir, cache_dir=cache, **kw))
    stage.setup()
    return stage


def test_items_are_exactly_what_refinery_eval_scores(eval_dir):
    """Every split of every task the model wing can score: same files, same contexts, same choices."""
    from model.evaluate import bpb, tasks

    for name, spec in tasks.TASKS.items():
        assert set(dc.TASK_SPLITS[name]) == set(spec.splits), name
        for split, sp in spec.splits.items():
            assert dc.TASK_SPLITS[name][split] == tuple(sp.files), (name, split)
            theirs = sp.loader(dc.eval_dir(eval_dir))
            ours = dc.load_eval_items(name, eval_dir, split)
            assert len(ours) == len(theirs) > 0, (name, split)
            for a, b in zip(ours, theirs):
                assert a.context == b.context, (name, split)
                want = tuple(b.choices) if hasattr(b, "choices") else (b.continuation,)
                assert a.choices == want, (name, split)
    text = bpb.read_text_file(dc.eval_dir(eval_dir) / tasks.DEFAULT_BPB_TEXT)
    lines = [it.context for it in dc.load_eval_items("wikitext", eval_dir)]
    assert lines == [ln for ln in text.split("\n") if ln.strip()]
    assert dc.TASK_FILES["wikitext"] == (tasks.DEFAULT_BPB_TEXT,)


def test_index_size_and_short_items(index, capsys):
    info = index.info()
    with capsys.disabled():
        print(f"\ndecontamination index: {info['ngrams']:,} 13-grams, {info['bytes'] / 1e6:.1f} MB; "
              f"per task {info['ngrams_per_task']}; passages shorter than 13 words {info['short_passages_per_task']}")
    assert 1_000_000 < info["ngrams"] < 4_000_000
    assert info["bytes"] == info["ngrams"] * 10 < 50e6
    assert np.all(np.diff(index.hashes.astype(np.uint64)) > 0)  # sorted, distinct
    assert set(info["ngrams_per_task"]) == set(dc.DEFAULT_TASKS) and all(info["ngrams_per_task"].values())
    # an ARC item whose question + answer has fewer than 13 words cannot be matched: counted, not hidden
    assert info["short_passages_per_task"]["arc_easy"] > 0


def test_a_passage_shorter_than_n_words_is_never_a_match(eval_dir, tmp_path):
    short = next(p for it in dc.load_eval_items("arc_easy", eval_dir) for p in it.passages
                 if len(dc.normalized_words(p)) < 13)
    stage = _stage(eval_dir, str(tmp_path), tasks=["arc_easy"])
    doc, why = apply_stage(stage, {"id": "s", "text": f"Some page. {short} And more text around it."})
    assert why is None and doc["decontam_ngrams"] == 0
    # with n small enough the same passage is found
    stage5 = _stage(eval_dir, str(tmp_path), tasks=["arc_easy"], ngram=5)
    assert apply_stage(stage5, {"id": "s", "text": f"Some page. {short} And more."})[1] == "decontaminate:arc_easy"


def test_normalization_ignores_case_and_punctuation(index):
    words = dc.normalized_words("Hello,  WORLD -- it's 3.5 o'clock_now!")
    assert words == ["hello", "world", "it", "s", "3", "5", "o", "clock", "now"]
    hasher = dc.WordHasher()
    passage = next(it.passages[0] for it in dc.load_eval_items("lambada") if len(it.passages[0]) > 200)
    shouted = passage.upper().replace(" ", " ;; ")
    assert dc.find_contamination(shouted, index, hasher).ngrams.get("lambada", 0) > 0


def test_spans_point_into_the_original_text_when_lowering_changes_its_length():
    text = "İstanbul İzmir and then Some Words"  # "İ".lower() is two characters
    words, spans = dc.normalized_word_spans(text)
    assert words == dc.normalized_words(text)
    assert [text[a:b].lower().replace("i̇", "i") for a, b in spans][-3:] == ["then", "some", "words"]
    assert text[spans[0][0]:spans[1][1]].startswith("İstanbul")


def _plant(rng, cc_texts, passage):
    host = rng.choice([t for t in cc_texts if len(t) > 3000])
    cut = host.find(" ", len(host) // 2)
    return host[:cut] + "\n" + passage + "\n" + host[cut:], host


@pytest.mark.parametrize("task", dc.DEFAULT_TASKS)
def test_planted_passages_are_found_in_drop_and_cut_mode(task, eval_dir, index, cc_texts, tmp_path):
    rng = random.Random(task)
    passages = [p for it in dc.load_eval_items(task, eval_dir) for p in it.passages if len(dc.normalized_words(p)) >= 20]
    drop = _stage(eval_dir, str(tmp_path), mode="drop")
    cut = _stage(eval_dir, str(tmp_path), mode="cut", min_chars=0)
    for passage in rng.sample(passages, 20):
        text, host = _plant(rng, cc_texts, passage)
        doc, why = apply_stage(drop, {"id": "p", "text": text})
        assert doc[f"decontam_{task}"] > 0, (task, passage[:80])
        assert why is not None and why.startswith("decontaminate:")
        doc, why = apply_stage(cut, {"id": "p", "text": text})
        assert why is None and doc["decontam_removed_chars"] >= len(passage)
        assert passage not in doc["text"]
        # the host page outside the removed window (+-200 characters) survives
        assert host.strip()[:100] in doc["text"] and host.strip()[-100:] in doc["text"]


def test_cut_mode_splits_and_length_rules(eval_dir, cc_texts, tmp_path):
    items = [it.passages[0] for it in dc.load_eval_items("lambada", eval_dir)[:12]]
    filler = " ".join(["word"] * 120)
    text = filler + "".join(f" {p} {filler}" for p in items)  # 12 separate matches, 600+ characters apart
    stage = _stage(eval_dir, str(tmp_path), mode="cut", max_splits=10, min_chars=0)
    doc, why = apply_stage(stage, {"id": "c", "text": text})
    assert why == "decontaminate:too_many_splits" and doc["decontam_lambada"] > 0
    stage = _stage(eval_dir, str(tmp_path), mode="cut", max_splits=20, min_chars=0)
    doc, why = apply_stage(stage, {"id": "c", "text": text})
    assert why is None and all(p not in doc["text"] for p in items) and doc["text"].count("\n\n") == 12
    stage = _stage(eval_dir, str(tmp_path), mode="cut", min_chars=200)
    assert apply_stage(stage, {"id": "c", "text": items[0]})[1] == "decontaminate:too_short"


def test_real_common_crawl_documents_are_left_alone(eval_dir, cc_texts, tmp_path, capsys):
    stage = _stage(eval_dir, str(tmp_path), mode="drop")
    hits = []
    for i, text in enumerate(cc_texts):
        doc, why = apply_stage(stage, {"id": str(i), "text": text})
        assert not (why or "").startswith("decontaminate:error")
        if doc["decontam_ngrams"]:
            hits.append((i, doc["decontam_task"], doc["decontam_ngrams"]))
    with capsys.disabled():
        print(f"\nreal CC documents with an eval 13-gram: {len(hits)} of {len(cc_texts)} ({100 * len(hits) / len(cc_texts):.2f}%): {hits}")
    # the rate of flagged documents on real text (each flagged one checked by hand, see README)
    assert len(hits) / len(cc_texts) < 0.02


def test_index_cache_is_reused_and_not_pickled(eval_dir, tmp_path):
    import pickle

    a = dc.load_index(("piqa",), 13, eval_dir, str(tmp_path))
    dc._INDEXES.clear()
    b = dc.load_index(("piqa",), 13, eval_dir, str(tmp_path))  # from the .npy files, memory-mapped
    assert isinstance(b.hashes, np.memmap) and np.array_equal(a.hashes, b.hashes) and np.array_equal(a.masks, b.masks)
    stage = _stage(eval_dir, str(tmp_path), tasks=["piqa"])
    assert len(pickle.dumps(stage)) < 2000  # the index is not part of the pickled stage


def test_bad_parameters_are_errors():
    from pipeline.stages.base import ParamError

    for kw in ({"tasks": ["nope"]}, {"tasks": []}, {"mode": "erase"}, {"ngram": 1}):
        with pytest.raises(ParamError):
            DecontaminateParams(**kw).validate()
