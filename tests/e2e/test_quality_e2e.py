"""End to end on the shared data: ``refinery train-classifier`` (CLI), then ``refinedweb_plus`` with all three
quality stages (accounting invariants, signal columns on kept and rejected shards), and ``refinery ablate``
accepting ``rw_filtered,refinedweb,refinedweb_plus``."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from pipeline.io.shards import read_table
from pipeline.paths import REPO, require_shared
from pipeline.report import check_report

WARCS = ("news-articles-aeb.warc.gz", "serp-archive-0001.warc.gz")
LIMIT = "120"


def _refinery(*args, env=None, cwd=None):
    env = dict(os.environ, REFINERY_PROGRESS="0", **(env or {}))
    proc = subprocess.run([sys.executable, "-m", "pipeline.cli", *args], capture_output=True, text=True, env=env,
                          cwd=cwd or REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def model(shared_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("quality_model")
    printed = _refinery("train-classifier",
                        "--positive", str(require_shared("html", "article-extraction-benchmark", "ground-truth.json")),
                        "--negative", str(require_shared("cc", "cc-main-2019-30-extracted.jsonl.gz")),
                        "--output", str(out), "--bucket", "20000", "--dim", "16", "--epoch", "10")
    assert "ROC AUC" in printed and (out / "model.bin").exists()
    card = json.loads((out / "model.json").read_text())
    assert card["metrics"]["roc_auc"] > 0.8 and card["data"]["positive"][0]["documents"] == 181
    return out / "model.bin"


@pytest.mark.slow
def test_refinedweb_plus_runs_with_all_three_stages(model, shared_data, tmp_path):
    out = tmp_path / "rwp"
    _refinery("run", "refinedweb_plus", "--input", *[str(require_shared("warc", w)) for w in WARCS],
              "--output", str(out), "--limit", LIMIT, env={"WEBREFINERY_QUALITY_MODEL": str(model)})
    report = json.loads((out / "report.json").read_text())
    check_report(report)
    names = [s["name"] for s in report["stages"]]
    assert names[-3:] == ["quality_classifier", "decontaminate", "pii"]
    qc = report["stages"][names.index("quality_classifier")]
    assert qc["in"] > 20 and qc["kept"] == -(-qc["in"] // 10)  # keep_top 0.1, exact
    assert set(qc["rejected"]) == {"quality_classifier:below_top"}
    docs = [r for p in sorted((out / "documents").glob("*.arrow")) for r in read_table(str(p)).to_pylist()]
    rej = [r for p in sorted((out / "rejected").glob("*.arrow")) for r in read_table(str(p)).to_pylist()]
    assert len(docs) == report["output_documents"]
    for r in docs:
        assert r["quality_score"] >= r["quality_cutoff"]
        assert r["decontam_ngrams"] is not None and r["pii_email"] is not None
    below = [r for r in rej if r["reason"] == "quality_classifier:below_top"]
    assert below and all(r["quality_score"] is not None and r["decontam_ngrams"] is None for r in below)
    assert "quality" in report and set(report["quality"]) >= {"quality_classifier", "decontaminate", "pii"}
    q = report["quality"]
    assert q["quality_classifier"]["kept"] == qc["kept"] and sum(q["quality_classifier"]["histogram"]["kept"]) == qc["kept"]
    assert q["quality_classifier"]["cutoff"] <= min(r["quality_score"] for r in docs)
    assert set(q["decontaminate"]["tasks"]) == {"hellaswag", "arc_easy", "arc_challenge", "piqa", "lambada", "wikitext"}
    assert q["pii"]["replaced"]["email"] == sum(r["pii_email"] for r in docs + rej if r.get("pii_email"))
    _refinery("report", str(out))
    page = (out / "report" / "index.html").read_text()
    assert 'id="quality"' in page and "n-grams matched" in page
    assert (out / "report" / "quality_scores.png").stat().st_size > 5000 and (out / "report" / "pii.png").exists()


@pytest.mark.slow
def test_ablate_accepts_refinedweb_plus(model, shared_data, tmp_path):
    printed = _refinery("ablate", "--pipelines", "rw_filtered,refinedweb,refinedweb_plus",
                        "--input", *[str(require_shared("warc", w)) for w in WARCS], "--output", str(tmp_path / "abl"),
                        "--limit", LIMIT, "--max-steps", "2", "--batch-size", "2", "--block-size", "32",
                        "--vocab-size", "300", "--tasks", "bpb", "--bpb-max-tokens", "2000", "--device", "cpu",
                        env={"WEBREFINERY_QUALITY_MODEL": str(model)})
    result = json.loads((tmp_path / "abl" / "ablation.json").read_text())
    assert [r["pipeline"] for r in result["table"]] == ["rw_filtered", "refinedweb", "refinedweb_plus"]
    rows = {r["pipeline"]: r for r in result["table"]}
    assert rows["refinedweb_plus"]["documents"] < rows["refinedweb"]["documents"] <= rows["rw_filtered"]["documents"]
    assert all(r.get("bpb") for r in result["table"]) and "refinedweb_plus" in printed
