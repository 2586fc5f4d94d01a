"""Tests for what a harness user expects of `refinery eval`: the split of every result (ARC on its test split,
as lm-evaluation-harness reports it), per-item `--log-samples` lines that recompute every aggregate exactly,
and the count of items scored in windows."""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import pytest
import torch
from tokenizers import Tokenizer

from pipeline.paths import require_shared
from model.checkpoint import save_checkpoint
from model.evaluate import evaluate
from model.evaluate.cli import add_eval_arguments, format_results_table, run_eval
from model.evaluate.scoring import TextTokenizer, binomial_stderr, encode_requests, score_continuations
from model.evaluate.tasks import TASKS, load_task
from model.gpt import GPT, GPTConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ALL_TASKS = "bpb,hellaswag,arc_easy,arc_challenge,piqa,lambada"
BLOCK = 40  # context of the logged model: shorter than about half of the first 40 HellaSwag endings


@pytest.fixture(scope="module")
def tokenizer(shakespeare_bpe) -> TextTokenizer:
    """A 512-token byte-level BPE trained on real text (the session's ``shakespeare_bpe``)."""
    return TextTokenizer(Tokenizer.from_file(str(shakespeare_bpe)))


def small_model(vocab: int, block_size: int) -> GPT:
    torch.manual_seed(7)
    model = GPT(GPTConfig(vocab_size=vocab, n_layer=1, n_head=2, n_kv_head=2, n_embd=32, block_size=block_size))
    with torch.no_grad():  # random but not flat, so that predictions differ between choices
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    return model.eval()


# ----------------------------------------------------------------------------- splits


@pytest.mark.parametrize("name,count", [("arc_easy", 2376), ("arc_challenge", 1172)])
def test_arc_scores_the_test_split_by_default_with_its_answer_keys(name, count):
    folder = require_shared("eval")
    assert TASKS[name].default_split == "test"
    items = load_task(name, folder)
    rows = [json.loads(line) for line in (folder / f"{name}_test.jsonl").read_text(encoding="utf-8").splitlines()
            if line.strip()]
    assert len(items) == len(rows) == count
    for item, row in zip(items, rows):
        labels = row["choices"]["label"]
        assert item.source_id == row["id"]
        assert item.choices[item.gold] == row["choices"]["text"][labels.index(row["answerKey"])]
        assert item.context == "Question: " + row["question"] + "\nAnswer:"
    # the answer keys are not all the same letter (the gold index really comes from each row)
    assert len({it.gold for it in items}) >= 4
    validation = load_task(name, folder, split="validation")
    assert len(validation) == {"arc_easy": 570, "arc_challenge": 299}[name]
    assert {it.source_id for it in validation}.isdisjoint(it.source_id for it in items)


def test_every_result_names_its_split(tokenizer, tmp_path):
    model = small_model(tokenizer.vocab_size, 64)
    folder = require_shared("eval")
    res = evaluate(model, tokenizer, ALL_TASKS, folder, limit=3, batch_size=8,
                   bpb_params=None, text=None)
    assert {t: r["split"] for t, r in res.items()} == {
        "bpb": "test", "hellaswag": "validation", "arc_easy": "test", "arc_challenge": "test",
        "piqa": "validation", "lambada": "test"}
    val = evaluate(model, tokenizer, "arc_easy,arc_challenge,lambada", folder, limit=3, split="validation")
    assert {t: r["split"] for t, r in val.items()} == {"arc_easy": "validation", "arc_challenge": "validation",
                                                       "lambada": "test"}  # LAMBADA has only its test split
    # the two ARC splits hold different questions, so the scores come from different items
    assert res["arc_easy"]["n"] == val["arc_easy"]["n"] == 3
    table = format_results_table(res)
    header = table.splitlines()[0].split()
    assert header[:3] == ["task", "split", "metric"]
    assert any(line.split()[:2] == ["arc_easy", "test"] for line in table.splitlines())
    assert any(line.split()[:2] == ["hellaswag", "validation"] for line in table.splitlines())
    custom = tmp_path / "mine.txt"
    custom.write_text("Some text of my own, to be scored.\n" * 20, encoding="utf-8")
    assert evaluate(model, tokenizer, "bpb", text=custom)["bpb"]["split"] == "custom"
    with pytest.raises(ValueError, match="unknown split"):
        evaluate(model, tokenizer, "arc_easy", folder, split="train")


# ----------------------------------------------------------------------------- --log-samples


def write_token_shard(path, docs):
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.table({"id": [f"doc-{i}" for i in range(len(docs))],
                      "tokens": pa.array(docs, type=pa.large_list(pa.uint16()))})
    with ipc.new_file(str(path), table.schema) as writer:
        writer.write_table(table)


def read_lines(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def recompute_bpb(lines):
    total = math.fsum(r["nll"] for r in lines)
    tokens, n_bytes = sum(r["tokens"] for r in lines), sum(r["bytes"] for r in lines)
    return {"bpb": total / (n_bytes * math.log(2)), "bits_per_token": total / (tokens * math.log(2)),
            "ppl": math.exp(total / tokens), "tokens": tokens, "bytes": n_bytes, "n": len(lines)}


@pytest.fixture(scope="module")
def logged(tokenizer, tmp_path_factory):
    """`refinery eval --log-samples` over every task on a checkpoint whose context (BLOCK tokens) is shorter
    than some HellaSwag endings, so some items are scored in windows."""
    tmp = tmp_path_factory.mktemp("samples")
    model = small_model(tokenizer.vocab_size, BLOCK)
    run_dir = tmp / "run"
    save_checkpoint(run_dir, 3, model)
    tokenizer.inner.save(str(run_dir / "tokenizer.json"))
    sentences = ["The cat sat on the mat.", "A bird flew over the river, singing.", "Naïve café — 日本語 text."]
    write_token_shard(run_dir / "tokens" / "val" / "s0.arrow", [tokenizer.encode(s) for s in sentences])
    args = add_eval_arguments(argparse.ArgumentParser()).parse_args(
        ["--checkpoint", str(run_dir), "--tasks", ALL_TASKS, "--limit", "40", "--device", "cpu",
         "--data-dir", str(require_shared("eval")), "--tokens", str(run_dir / "tokens"),
         "--text", str(require_shared("eval", "wikitext-2-raw-test.txt")), "--max-tokens", "600",
         "--batch-size", "16", "--log-samples", str(tmp / "samples"), "--output", str(tmp / "eval.json")])
    results = run_eval(args)
    return {"results": results, "saved": json.loads((tmp / "eval.json").read_text()), "dir": tmp / "samples",
            "model": model, "sentences": sentences}


def test_log_samples_writes_one_file_per_task(logged):
    files = sorted(p.name for p in logged["dir"].iterdir())
    assert files == sorted(f"samples_{t}.jsonl" for t in logged["saved"])
    assert set(logged["saved"]) == {"bpb", "bpb_text", "hellaswag", "arc_easy", "arc_challenge", "piqa", "lambada"}
    assert all("details" not in r for r in logged["saved"].values())  # per-item data stays out of eval.json
    for task, result in logged["saved"].items():
        lines = read_lines(logged["dir"] / f"samples_{task}.jsonl")
        assert len(lines) == result["n"]
        assert all(r["task"] == task and r["split"] == result["split"] for r in lines)
        assert [r["doc_id"] for r in lines] == list(range(len(lines)))


@pytest.mark.parametrize("task", ["hellaswag", "arc_easy", "arc_challenge", "piqa"])
def test_multiple_choice_lines_recompute_the_metrics_exactly(logged, task, tokenizer):
    result = logged["saved"][task]
    lines = read_lines(logged["dir"] / f"samples_{task}.jsonl")
    n = len(lines)
    for r in lines:
        assert len(r["choices"]) == len(r["loglikelihoods"]) == len(r["n_tokens"]) == len(r["n_chars"]) >= 2
        assert r["pred"] == int(np.argmax(r["loglikelihoods"]))
        assert r["pred_norm"] == int(np.argmax(np.array(r["loglikelihoods"]) / np.array(r["n_chars"], float)))
        assert r["acc"] == float(r["pred"] == r["gold"]) and r["acc_norm"] == float(r["pred_norm"] == r["gold"])
        assert r["n_chars"] == [len(c) for c in r["choices"]]
    acc = sum(r["acc"] for r in lines) / n
    acc_norm = sum(r["acc_norm"] for r in lines) / n
    assert (result["acc"], result["acc_norm"]) == (acc, acc_norm)
    assert result["acc_stderr"] == binomial_stderr(acc, n) and result["acc_norm_stderr"] == binomial_stderr(acc_norm, n)
    assert result["windowed"] == sum(r["windowed"] for r in lines)
    assert result["chance"] == pytest.approx(sum(1 / len(r["choices"]) for r in lines) / n, abs=1e-12)
    # the lines are the real items and scores: the first one rescored directly gives the same numbers
    first = lines[0]
    items = load_task(task, require_shared("eval"), limit=1, split=result["split"])
    assert first["context"] == items[0].context and first["choices"] == items[0].choices
    requests = encode_requests(tokenizer, [(first["context"], first["target_delimiter"] + c) for c in first["choices"]])
    direct = score_continuations(logged["model"], requests, batch_size=1)
    assert [s.n_tokens for s in direct] == first["n_tokens"]
    np.testing.assert_allclose([s.loglikelihood for s in direct], first["loglikelihoods"], atol=1e-4)


def test_items_longer_than_the_context_are_counted_as_windowed(logged, tokenizer):
    result = logged["saved"]["hellaswag"]
    lines = read_lines(logged["dir"] / "samples_hellaswag.jsonl")
    # an item is windowed exactly when one of its endings is longer than the model's context
    expected = [max(r["n_tokens"]) > BLOCK for r in lines]
    assert [r["windowed"] for r in lines] == expected
    assert 0 < result["windowed"] == sum(expected) < len(lines)
    table = format_results_table(logged["saved"])
    row = next(line for line in table.splitlines() if line.startswith("hellaswag") and " acc_norm " in line)
    assert row.split()[-1] == str(result["windowed"])


def test_lambada_lines_recompute_the_metrics_exactly(logged):
    result = logged["saved"]["lambada"]
    lines = read_lines(logged["dir"] / "samples_lambada.jsonl")
    n = len(lines)
    assert all(r["target"].startswith(" ") and r["acc"] == float(r["is_greedy"]) for r in lines)
    assert result["acc"] == sum(r["acc"] for r in lines) / n
    assert result["ppl"] == math.exp(-sum(r["loglikelihood"] for r in lines) / n)
    assert result["windowed"] == sum(r["windowed"] for r in lines)
    first = load_task("lambada", require_shared("eval"), limit=1)[0]
    assert (lines[0]["context"], lines[0]["target"]) == (first.context, first.continuation)


@pytest.mark.parametrize("task", ["bpb", "bpb_text"])
def test_bits_per_byte_lines_recompute_the_metrics_exactly(logged, task):
    result = logged["saved"][task]
    lines = read_lines(logged["dir"] / f"samples_{task}.jsonl")
    recomputed = recompute_bpb(lines)
    assert {k: result[k] for k in recomputed} == recomputed
    for r in lines:
        assert r["bpb"] == (r["nll"] / (r["bytes"] * math.log(2)) if r["bytes"] else None)
    if task == "bpb":  # token shards: one line per document, with its shard, row and id
        sentences = logged["sentences"]
        assert [(r["shard"], r["row"], r["id"]) for r in lines] == [("s0.arrow", i, f"doc-{i}") for i in range(3)]
        assert [r["bytes"] for r in lines] == [len(s.encode("utf-8")) for s in sentences]
        assert result["split"] == "validation"
    else:
        assert result["split"] == "test" and result["tokens"] == 600 and lines[0]["source"].endswith(
            "wikitext-2-raw-test.txt")


def test_the_windowed_counter_agrees_with_the_scorer(logged, tokenizer):
    from model.evaluate.windowed import longest_continuations

    for task in ("hellaswag", "piqa", "lambada"):
        lines = read_lines(logged["dir"] / f"samples_{task}.jsonl")
        items = load_task(task, require_shared("eval"), limit=len(lines))
        assert [n > BLOCK for n in longest_continuations(tokenizer, items)] == [r["windowed"] for r in lines]


def test_wikitext_bits_per_byte_is_logged_per_article(tokenizer):
    from model.evaluate.bpb import BPBParams, document_starts, evaluate_text, read_text_file, sliding_window_nll

    text = read_text_file(require_shared("eval", "wikitext-2-raw-test.txt"))
    starts, titles = document_starts(text)
    assert len(starts) == 62 and starts[0] == 0 and titles[0] == "Robert Boulter"  # the harness's 62 documents
    part = text[:starts[3]]  # three whole articles
    model = small_model(tokenizer.vocab_size, BLOCK)
    params = BPBParams(batch_size=16)
    res = evaluate_text(model, tokenizer, part, params, return_details=True)
    lines = res.pop("details")
    assert [r["title"] for r in lines] == titles[:3] and res["n"] == 3
    assert sum(r["bytes"] for r in lines) == res["bytes"] == len(part.encode("utf-8"))
    assert [r["bytes"] for r in lines] == [len(part[a:b].encode("utf-8")) for a, b in zip(starts[:3], starts[1:4])]
    assert {k: res[k] for k in recompute_bpb(lines)} == recompute_bpb(lines)
    # the same stream scored directly: the split into articles changes no number
    stream = np.array([tokenizer.eot_id] + tokenizer.encode(part))
    nll = sliding_window_nll(model, stream, batch_size=16)
    assert res["tokens"] == len(stream) - 1
    assert res["bpb"] == pytest.approx(nll.sum() / (len(part.encode("utf-8")) * math.log(2)), rel=1e-12)
    # cut by max_tokens: the last article counts the bytes of its scored tokens only
    cut = evaluate_text(model, tokenizer, part, BPBParams(batch_size=16, max_tokens=2000), return_details=True)
    assert cut["tokens"] == 2000 and sum(r["tokens"] for r in cut["details"]) == 2000
    assert cut["bytes"] == len(tokenizer.decode(stream[1:2001].tolist()).encode("utf-8"))


def test_the_ablation_table_names_each_tasks_split(logged, tmp_path):
    from pipeline.ablate import _headline, _splits, draw, format_table

    results = logged["saved"]
    cell = _splits(results)
    assert "arc_easy=test" in cell and "hellaswag=validation" in cell and "bpb=validation" in cell
    row = {"pipeline": "p", "documents": 3, "train_tokens": 10, **_headline(results), "splits": cell, "seconds": 1.0}
    assert cell in format_table([row])
    assert (tmp_path / "a.png").exists() is False
    draw([row], str(tmp_path / "a.png"))  # the text column is not drawn as a metric
    assert (tmp_path / "a.png").stat().st_size > 1000
