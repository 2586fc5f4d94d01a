"""The quality stages keep the accounting invariants on the bad-input corpus (tests/reliability/test_bad_input.py's damaged
and hostile archives): every record read leaves each stage kept or rejected with a reason, no dead letters,
in a plain loop and in a Beam run with keep_top."""

from __future__ import annotations

import collections

import pytest

from pipeline.config import get_pipeline
from pipeline.io.readers import iter_records
from pipeline.quality.classifier import TrainParams
from pipeline.quality.stages import (DecontaminateParams, DecontaminateStage, PiiParams, PiiStage,
                                     QualityClassifierParams, QualityClassifierStage)
from pipeline.quality.train_cli import train_classifier
from pipeline.report import check_report
from pipeline.stages.base import DocumentStage, run_stages
from tests.reliability.test_bad_input import build_corpus  # the bad-input corpus builder


@pytest.fixture(scope="module")
def setting(tmp_path_factory, shared_data):
    root = tmp_path_factory.mktemp("quality-bad")
    corpus = build_corpus(root / "corpus")
    from pipeline.quality.train_cli import read_corpus
    from pipeline.paths import require_shared

    pos = read_corpus(str(require_shared("html", "article-extraction-benchmark", "ground-truth.json")))[:60]
    neg = read_corpus(str(require_shared("cc", "cc-main-2019-30-extracted.jsonl.gz")))[:60]
    train_classifier(pos, neg, str(root / "model"), TrainParams(dim=8, epoch=2, bucket=5000), holdout=0.1)
    return corpus, str(root / "model" / "model.bin"), str(root / "cache")


@pytest.mark.timeout(600)
def test_plain_loop_accounts_for_every_record(setting):
    corpus, model, cache = setting
    stages = [s for s in get_pipeline("refinedweb_fast").build_stages() if isinstance(s, DocumentStage)]
    stages += [QualityClassifierStage(QualityClassifierParams(model_path=model, threshold=0.0)),
               DecontaminateStage(DecontaminateParams(mode="cut", min_chars=0, cache_dir=cache)),
               PiiStage(PiiParams(kinds=("email", "ip", "phone", "card")))]
    docs = [d for path in corpus.files for d, why in iter_records(path) if why is None]
    outcomes = collections.Counter()
    for doc, why in run_stages(stages, docs):
        assert not (why or "").count(":error:"), why
        outcomes[(why or "kept").split(":")[0]] += 1
        if why is None:
            assert doc["quality_score"] is not None and doc["decontam_ngrams"] is not None and doc["pii_email"] is not None
    assert sum(outcomes.values()) == len(docs) and outcomes["kept"] > 0


@pytest.mark.timeout(600)
def test_beam_run_with_keep_top_keeps_the_invariants(setting, tmp_path):
    from pipeline.run import run_pipeline

    corpus, model, cache = setting
    cfg = tmp_path / "p.yaml"
    cfg.write_text(
        "version: 1\npipelines:\n  q:\n    description: bad input through the quality layer\n    stages:\n"
        "      - extract:\n          extractor: resiliparse\n"
        f"      - quality_classifier:\n          model_path: {model}\n          keep_top: 0.5\n"
        f"      - decontaminate:\n          mode: cut\n          min_chars: 0\n          cache_dir: {cache}\n"
        "      - pii\n    output:\n      num_shards: 2\n      rejected_shards: 2\n")
    report = run_pipeline("q", [str(corpus.folder)], str(tmp_path / "out"), config=str(cfg), draw=False)
    check_report(report)
    by = {s["name"]: s for s in report["stages"]}
    qc = by["quality_classifier"]
    assert qc["in"] > 0 and qc["kept"] == -(-qc["in"] // 2)
    assert not any(":error:" in r for s in report["stages"] for r in s["rejected"])
    assert by["pii"]["in"] == by["decontaminate"]["kept"] == by["pii"]["kept"] == report["output_documents"]
    assert report["quality"]["quality_classifier"]["documents"] == qc["in"]
