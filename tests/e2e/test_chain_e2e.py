"""The whole chain on real shared data, through the `refinery` command a user types:
refinedweb -> train-tokenizer -> tokenize -> pretrain (tiny, CPU) -> eval -> generate -> export, and ablate."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from pipeline.paths import REPO, require_shared


def refinery(*args, timeout=900):
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "pipeline.cli", *map(str, args)], capture_output=True, text=True, env=env, timeout=timeout)
    assert proc.returncode == 0, f"refinery {' '.join(map(str, args))} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


@pytest.fixture(scope="module")
def refined(tmp_path_factory):
    out = tmp_path_factory.mktemp("chain") / "refined"
    refinery("run", "refinedweb", "--input", require_shared("warc", "news-articles-aeb.warc.gz"),
             require_shared("cc", "cc-main-2019-30-extracted.jsonl.gz"), "--output", out)
    report = json.loads((out / "report.json").read_text())
    assert [s["name"] for s in report["stages"]][-4:] == ["exact_dedup", "url_dedup", "minhash_dedup", "substring_dedup"]
    assert report["output_documents"] > 100
    return out


def test_tokenizer_tokens_pretrain_eval_generate_export(refined, tmp_path):
    tok, tokens, run = tmp_path / "tok", tmp_path / "tokens", tmp_path / "run"
    refinery("train-tokenizer", "--input", refined / "documents", "--output", tok, "--vocab-size", 1024)
    assert (tok / "tokenizer.json").exists()
    refinery("tokenize", "--input", refined / "documents", "--tokenizer", tok / "tokenizer.json", "--output", tokens, "--val-fraction", 0.1)
    manifest = json.loads((tokens / "manifest.json").read_text())
    assert manifest["dtype"] == "uint16" and manifest["splits"]["val"]["tokens"] > 0
    refinery("pretrain", "--tokens", tokens, "--out", run, "--preset", "tiny", "--max-steps", 40, "--batch-size", 8,
             "--eval-every", 20, "--eval-steps", 2, "--no-progress")
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == 40 and log[-1]["loss"] < log[0]["loss"]
    out = tmp_path / "eval.json"
    refinery("eval", "--checkpoint", run, "--tasks", "bpb,hellaswag,arc_easy,piqa,lambada", "--limit", 20,
             "--tokens", tokens, "--max-tokens", 5000, "--output", out)
    results = json.loads(out.read_text())
    assert set(results) >= {"bpb", "hellaswag", "arc_easy", "piqa", "lambada"}
    assert 0 < results["bpb"]["bpb"] < 12 and results["hellaswag"]["n"] == 20
    text = refinery("generate", "--checkpoint", run, "--prompt", "The city council", "--max-new-tokens", 8, "--seed", 1)
    assert "The city council" in text
    hf = tmp_path / "hf"
    refinery("export", "--checkpoint", run, "--out", hf)
    assert (hf / "model.safetensors").exists() and json.loads((hf / "config.json").read_text())["architectures"] == ["LlamaForCausalLM"]


def test_ablation_table(tmp_path):
    out = tmp_path / "ablation"
    stdout = refinery("ablate", "--input", require_shared("warc", "news-articles-aeb.warc.gz"),
                      require_shared("cc", "cc-main-2019-30-extracted.jsonl.gz"), "--output", out,
                      "--pipelines", "rw_raw,rw_filtered,refinedweb_fast", "--vocab-size", 1024, "--max-steps", 30,
                      "--batch-size", 8, "--tasks", "bpb,hellaswag", "--eval-limit", 20, "--bpb-max-tokens", 5000)
    result = json.loads((out / "ablation.json").read_text())
    rows = {r["pipeline"]: r for r in result["table"]}
    assert list(rows) == ["rw_raw", "rw_filtered", "refinedweb_fast"]
    # refinement only removes documents: each step keeps a subset of the one before
    assert rows["rw_raw"]["documents"] > rows["rw_filtered"]["documents"] > rows["refinedweb_fast"]["documents"] > 0
    for r in rows.values():
        assert 0 < r["bpb"] < 12 and 0 <= r["hellaswag:acc_norm"] <= 1
    assert (out / "ablation.png").stat().st_size > 1000
    assert "rw_filtered" in stdout
