"""Tests for model/evaluate: task loaders on the real eval files, harness-style scoring, bits per byte,
and the `refinery eval` runner on a saved checkpoint."""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import pytest
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer

from model.checkpoint import save_checkpoint
from model.evaluate import evaluate
from model.evaluate.bpb import (
    BPBParams,
    evaluate_text,
    evaluate_token_shards,
    per_byte_nll,
    sliding_window_nll,
    window_spans,
)
from model.evaluate.cli import add_eval_arguments, format_results_table, parse_task_list, run_eval
from model.evaluate.scoring import (
    TextTokenizer,
    continuation_pieces,
    encode_context_continuation,
    encode_requests,
    evaluate_continuations,
    evaluate_multiple_choice,
    score_continuations,
)
from model.evaluate.tasks import (
    TASKS,
    ContinuationItem,
    EvalDataError,
    MultipleChoiceItem,
    load_task,
    preprocess_hellaswag_text,
    resolve_data_dir,
)
from model.gpt import GPT, GPTConfig
from pipeline.paths import require_shared



pytestmark = pytest.mark.usefixtures("one_torch_thread")


def eval_dir():
    return require_shared("eval")


@pytest.fixture(scope="module")
def tokenizer(shakespeare_bpe) -> TextTokenizer:
    """A 512-token byte-level BPE trained on real text (the session's ``shakespeare_bpe``)."""
    return TextTokenizer(Tokenizer.from_file(str(shakespeare_bpe)))


def tiny_config(vocab: int, **kw) -> GPTConfig:
    values = dict(vocab_size=vocab, n_layer=2, n_head=4, n_kv_head=2, n_embd=64, block_size=128)
    values.update(kw)
    return GPTConfig(**values)


@pytest.fixture(scope="module")
def random_model(tokenizer) -> GPT:
    torch.manual_seed(1234)
    return GPT(tiny_config(tokenizer.vocab_size)).eval()


SENTENCES = [
    "The cat sat on the mat.",
    "The dog ate the bone.",
    "A bird flew over the river.",
    "My sister plays the violin.",
]


@pytest.fixture(scope="module")
def memorizing_model(tokenizer) -> GPT:
    """A tiny GPT trained with a plain loop until it has memorised SENTENCES."""
    torch.manual_seed(0)
    model = GPT(tiny_config(tokenizer.vocab_size, block_size=64))
    eot = tokenizer.eot_id
    rows = [[eot] + tokenizer.encode(s) + [eot] for s in SENTENCES]
    width = max(map(len, rows))
    x = torch.full((len(rows), width - 1), eot, dtype=torch.long)
    y = torch.full((len(rows), width - 1), -100, dtype=torch.long)
    for i, r in enumerate(rows):
        x[i, :len(r) - 1] = torch.tensor(r[:-1])
        y[i, :len(r) - 1] = torch.tensor(r[1:])
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    model.train()
    for _ in range(300):
        _, loss = model(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.25, f"the tiny model did not memorise its sentences (loss {loss.item():.3f})"
    return model.eval()


# ----------------------------------------------------------------------------- loaders


@pytest.mark.parametrize("name,split,count", [("hellaswag", None, 10042), ("arc_easy", None, 2376),
                                              ("arc_challenge", None, 1172), ("arc_easy", "validation", 570),
                                              ("arc_challenge", "validation", 299), ("piqa", None, 1838),
                                              ("lambada", None, 5153)])
def test_loaders_parse_every_shared_eval_file(name, split, count):
    items = load_task(name, eval_dir(), split=split)
    spec = TASKS[name]
    assert len(items) == count == spec.splits[spec.split_for(split)].expected_count
    for item in items:
        if isinstance(item, MultipleChoiceItem):
            assert 0 <= item.gold < len(item.choices) and len(item.choices) >= 2
            assert item.context and all(isinstance(c, str) and c for c in item.choices)
        else:
            assert item.continuation.startswith(" ") and " " not in item.continuation[1:]
            assert item.context and not item.context.endswith(" ")


def test_loaders_format_items_like_the_harness():
    hs = load_task("hellaswag", eval_dir(), limit=1)[0]
    assert hs.context == "Roof shingle removal: A man is sitting on a roof. He"
    assert hs.choices[3] == "starts pulling up roofing on a roof." and hs.gold == 3
    arc = load_task("arc_easy", eval_dir(), limit=1, split="validation")[0]
    assert arc.context == "Question: Which technology was developed most recently?\nAnswer:"
    assert arc.choices[arc.gold] == "cellular telephone" and arc.source_id == "MCAS_2000_4_6"
    piqa = load_task("piqa", eval_dir(), limit=2)
    assert piqa[0].context.startswith("Question: How do I ready a guinea pig cage") and piqa[0].gold == 0
    assert piqa[1].gold == 1
    lam = load_task("lambada", eval_dir(), limit=1)[0]
    assert lam.continuation == " signs" and lam.context.endswith("I don't care about")
    # ARC items whose labels are digits resolve their gold too
    digits = [it for it in load_task("arc_challenge", eval_dir()) if len(it.choices) != 4]
    assert digits and all(0 <= it.gold < len(it.choices) for it in digits)


def test_hellaswag_preprocessing_removes_wikihow_artefacts():
    assert preprocess_hellaswag_text(" Clean it [title] Use soap [step] now  ") == "Clean it. Use soap now"
    assert preprocess_hellaswag_text("a  b") == "a b"


def test_missing_files_and_bad_names_are_clear_errors(tmp_path, monkeypatch):
    with pytest.raises(EvalDataError, match="missing"):
        load_task("hellaswag", tmp_path)
    with pytest.raises(EvalDataError, match="unknown task"):
        load_task("winogrande", tmp_path)
    with pytest.raises(ValueError, match="unknown task"):
        parse_task_list("bpb,mmlu")
    (tmp_path / "arc_easy_test.jsonl").write_text('{"question": "q"\n')
    with pytest.raises(EvalDataError, match="not valid JSON"):
        load_task("arc_easy", tmp_path)
    with pytest.raises(EvalDataError, match="no 'test' split"):
        load_task("hellaswag", tmp_path, split="test")
    monkeypatch.setenv("WEBREFINERY_EVAL_DIR", str(tmp_path))
    assert resolve_data_dir(None) == tmp_path
    # a URL base is never fetched without permission
    with pytest.raises(EvalDataError, match="--download"):
        load_task("piqa", "https://example.invalid/eval")


# ----------------------------------------------------------------------------- tokenization


def test_context_continuation_split_follows_the_harness(tokenizer):
    ctx, cont = encode_context_continuation(tokenizer, "The cat sat on the ", "mat.")
    # the trailing space moved to the continuation, the whole string was encoded once
    assert ctx == tokenizer.encode("The cat sat on the")
    assert ctx + cont == tokenizer.encode("The cat sat on the mat.")
    assert tokenizer.decode(cont) == " mat."
    assert encode_context_continuation(tokenizer, "", "hello") == ([tokenizer.eot_id], tokenizer.encode("hello"))
    pairs = [("The cat sat on the", " mat."), ("Question: x\nAnswer:", " yes"), ("", "abc")]
    assert encode_requests(tokenizer, pairs) == [encode_context_continuation(tokenizer, c, x) for c, x in pairs]


def test_token_byte_lengths_match_utf8(tokenizer):
    text = "Naïve café — 日本語 text, with emoji 🙂 and\ttabs\n"
    ids = tokenizer.encode(text)
    lengths = tokenizer.token_byte_lengths()
    assert int(lengths[ids].sum()) == len(text.encode("utf-8"))
    assert lengths[tokenizer.eot_id] == 0


# ----------------------------------------------------------------------------- scoring


def test_scorer_prefers_the_memorised_ending(memorizing_model, tokenizer):
    items = [
        MultipleChoiceItem("The cat sat on the", ["bone.", "mat.", "river."], gold=1),
        MultipleChoiceItem("The dog ate the", ["bone.", "violin.", "mat."], gold=0),
        MultipleChoiceItem("A bird flew over the", ["mat.", "bone.", "river."], gold=2),
        MultipleChoiceItem("My sister plays the", ["river.", "bone.", "mat.", "violin."], gold=3),
    ]
    result = evaluate_multiple_choice(memorizing_model, tokenizer, items, batch_size=3, return_details=True)
    assert result["acc"] == 1.0 and result["n"] == 4
    # the prediction follows the content: shuffling the choices moves it with the right one
    shuffled = [MultipleChoiceItem(it.context, it.choices[::-1], len(it.choices) - 1 - it.gold) for it in items]
    again = evaluate_multiple_choice(memorizing_model, tokenizer, shuffled, return_details=True)
    assert again["acc"] == 1.0
    assert [d["pred"] for d in again["details"]] == [len(it.choices) - 1 - d["pred"]
                                                      for it, d in zip(items, result["details"])]


def test_lambada_style_continuations(memorizing_model, tokenizer):
    good = [ContinuationItem("The cat sat on the", " mat."), ContinuationItem("The dog ate the", " bone.")]
    res = evaluate_continuations(memorizing_model, tokenizer, good)
    assert res["acc"] == 1.0 and res["ppl"] < 1.5 and res["n"] == 2
    bad = evaluate_continuations(memorizing_model, tokenizer, [ContinuationItem("The cat sat on the", " bone.")])
    assert bad["acc"] == 0.0 and bad["ppl"] > 10


def test_acc_norm_and_acc_differ_when_lengths_differ(tokenizer):
    # a model whose next-token distribution is uniform: a continuation's log-likelihood is
    # -n_tokens * ln(V), so acc prefers few tokens and acc_norm prefers many characters per token
    model = GPT(tiny_config(tokenizer.vocab_size)).eval()
    with torch.no_grad():
        model.lm_head.weight.zero_()
    short, long = "zq", "the the the the the"
    n_short = len(encode_context_continuation(tokenizer, "Say:", " " + short)[1])
    n_long = len(encode_context_continuation(tokenizer, "Say:", " " + long)[1])
    assert n_short < n_long and n_short / len(short) > n_long / len(long)  # the premise of the case
    item = MultipleChoiceItem("Say:", [short, long], gold=1)
    res = evaluate_multiple_choice(model, tokenizer, [item], return_details=True)
    lls = res["details"][0]["loglikelihoods"]
    assert lls[0] == pytest.approx(-n_short * math.log(tokenizer.vocab_size), rel=1e-5)
    assert lls[1] == pytest.approx(-n_long * math.log(tokenizer.vocab_size), rel=1e-5)
    assert res["acc"] == 0.0 and res["acc_norm"] == 1.0


def test_batching_and_padding_do_not_change_scores(random_model, tokenizer):
    items = load_task("arc_easy", eval_dir(), limit=6)
    pairs = [(it.context, " " + c) for it in items for c in it.choices]
    requests = encode_requests(tokenizer, pairs)
    one = score_continuations(random_model, requests, batch_size=1)
    many = score_continuations(random_model, requests, batch_size=7)
    assert [s.n_tokens for s in one] == [len(r[1]) for r in requests]
    np.testing.assert_allclose([s.loglikelihood for s in one], [s.loglikelihood for s in many], atol=1e-4)
    # reference: one plain forward per request
    ctx, cont = requests[0]
    x = torch.tensor([ctx + cont])
    with torch.no_grad():
        logp = F.log_softmax(random_model(x[:, :-1])[0][0], dim=-1)
    ref = sum(float(logp[len(ctx) - 1 + j, t]) for j, t in enumerate(cont))
    assert one[0].loglikelihood == pytest.approx(ref, abs=1e-4)


def test_long_requests_keep_the_last_tokens(random_model, tokenizer):
    ctx = tokenizer.encode("word " * 300)
    cont = tokenizer.encode(" end")
    full = score_continuations(random_model, [(ctx, cont)], max_length=40)[0]
    cut = score_continuations(random_model, [(ctx[-(41 - len(cont)):], cont)], max_length=40)[0]
    assert full.loglikelihood == pytest.approx(cut.loglikelihood, abs=1e-5)


@pytest.mark.parametrize("n_ctx,n_cont,length", [(5, 3, 40), (50, 3, 40), (5, 100, 40), (60, 100, 16), (1, 17, 16)])
def test_continuation_pieces_cover_each_token_once_with_its_own_context(n_ctx, n_cont, length):
    ctx, cont = list(range(1000, 1000 + n_ctx)), list(range(n_cont))
    whole = ctx + cont
    pieces = continuation_pieces(ctx, cont, length)
    assert [t for _, targets in reversed(pieces) for t in targets] == cont
    for inp, targets in pieces:
        assert 1 <= len(inp) <= length and len(targets) <= len(inp)
        # the input is exactly the tokens before the last target, and it predicts each target
        end = n_ctx + targets[-1]  # index in ``whole`` of the last target (cont tokens are 0, 1, ...)
        assert inp == whole[end - len(inp):end]
        assert whole[end - len(targets) + 1:end + 1] == targets
    if n_ctx + n_cont - 1 <= length:
        assert len(pieces) == 1 and pieces[0][0] == whole[:-1]


def test_continuations_longer_than_the_window_are_scored_in_pieces(random_model, tokenizer):
    ctx = tokenizer.encode("Question: what is this?\nAnswer:")
    cont = tokenizer.encode(" " + "a long answer that goes on and on " * 8)
    assert len(cont) > 40
    got = score_continuations(random_model, [(ctx, cont), (ctx, cont[:5])], max_length=40, batch_size=3)
    assert got[0].n_tokens == len(cont) and got[1].n_tokens == 5
    expected = 0.0
    with torch.no_grad():
        for inp, targets in continuation_pieces(ctx, cont, 40):
            logp = F.log_softmax(random_model(torch.tensor([inp]))[0][0], dim=-1)
            first = len(inp) - len(targets)
            expected += sum(float(logp[first + j, t]) for j, t in enumerate(targets))
    assert got[0].loglikelihood == pytest.approx(expected, abs=1e-3)


def test_random_model_is_at_chance_so_the_label_cannot_leak(random_model, tokenizer):
    items = load_task("hellaswag", eval_dir(), limit=120) + load_task("arc_easy", eval_dir(), limit=120)
    res = evaluate_multiple_choice(random_model, tokenizer, items, batch_size=64, return_details=True)
    n, chance = res["n"], res["chance"]
    tol = 4 * math.sqrt(chance * (1 - chance) / n)
    assert abs(res["acc"] - chance) < tol, (res["acc"], chance, tol)
    assert abs(res["acc_norm"] - chance) < tol, (res["acc_norm"], chance, tol)
    # predictions do not depend on the gold field at all
    relabelled = [MultipleChoiceItem(it.context, it.choices, (it.gold + 1) % len(it.choices)) for it in items]
    res2 = evaluate_multiple_choice(random_model, tokenizer, relabelled, batch_size=64, return_details=True)
    assert [d["pred"] for d in res["details"]] == [d["pred"] for d in res2["details"]]


# ----------------------------------------------------------------------------- bits per byte


@pytest.mark.parametrize("n,length,stride", [(2, 8, 8), (9, 8, 8), (100, 16, 16), (100, 16, 5), (37, 10, 1),
                                             (17, 16, 4)])
def test_windows_score_every_target_exactly_once(n, length, stride):
    seen = []
    for begin, end, n_scored in window_spans(n, length, stride):
        assert 0 < end - begin <= length and 1 <= n_scored <= end - begin
        seen.extend(range(end - n_scored + 1, end + 1))  # target indices
        if begin > 0:
            assert end - n_scored - begin >= length - stride  # minimum context of a scored token
    assert seen == list(range(1, n))


def test_sliding_window_nll_matches_direct_forwards(memorizing_model, tokenizer):
    tokens = np.concatenate([[tokenizer.eot_id] + tokenizer.encode(s) for s in SENTENCES])
    assert len(tokens) <= 64
    with torch.no_grad():
        logits = memorizing_model(torch.tensor(tokens[None, :-1]))[0][0]
    ref = F.cross_entropy(logits, torch.tensor(tokens[1:]), reduction="none").double().numpy()
    got = sliding_window_nll(memorizing_model, tokens, max_length=64, stride=64, batch_size=2)
    np.testing.assert_allclose(got, ref, atol=1e-5)
    # stride 1: every token is predicted from exactly the 16 tokens before it (fewer at the start)
    brute = []
    with torch.no_grad():
        for t in range(1, len(tokens)):
            window = torch.tensor(tokens[None, max(0, t - 16):t])
            logp = F.log_softmax(memorizing_model(window)[0][0, -1], dim=-1)
            brute.append(-float(logp[tokens[t]]))
    np.testing.assert_allclose(sliding_window_nll(memorizing_model, tokens, max_length=16, stride=1, batch_size=8),
                               brute, atol=1e-4)


def test_bpb_two_ways_agree(random_model, tokenizer):
    text = require_shared("eval", "wikitext-2-raw-test.txt").read_text(encoding="utf-8")[:4000]
    res = evaluate_text(random_model, tokenizer, text, BPBParams(max_length=128, stride=64, batch_size=4))
    # way 2: per-byte accounting from per-token NLLs and each token's byte length
    stream = np.array([tokenizer.eot_id] + tokenizer.encode(text))
    nll = sliding_window_nll(random_model, stream, max_length=128, stride=64, batch_size=4)
    per_byte = per_byte_nll(nll, stream[1:], tokenizer.token_byte_lengths())
    assert len(per_byte) == res["bytes"] == len(text.encode("utf-8"))
    assert res["bpb"] == pytest.approx(per_byte.mean() / math.log(2), rel=1e-9)
    assert res["bpb"] == pytest.approx(nll.sum() / (len(text.encode("utf-8")) * math.log(2)), rel=1e-9)
    assert res["tokens"] == len(stream) - 1
    # a random model is near uniform: about log2(V) bits per token
    assert abs(res["bits_per_token"] - math.log2(tokenizer.vocab_size)) < 0.1
    assert res["ppl"] == pytest.approx(2 ** res["bits_per_token"], rel=1e-9)


def write_token_shard(path, docs, value_type=pa.uint16()):
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.table({"id": [f"d{i}" for i in range(len(docs))],
                      "tokens": pa.array(docs, type=pa.large_list(value_type))})
    with ipc.new_file(str(path), table.schema) as writer:
        writer.write_table(table)


def test_bpb_on_token_shards(memorizing_model, tokenizer, tmp_path):
    docs = [tokenizer.encode(s) for s in SENTENCES]
    write_token_shard(tmp_path / "val" / "shard_00000.arrow", docs[:2])
    write_token_shard(tmp_path / "val" / "shard_00001.arrow", docs[2:], pa.uint32())
    params = BPBParams(max_length=64, batch_size=2)
    res = evaluate_token_shards(memorizing_model, tokenizer, tmp_path, params)
    assert res["n"] == 4 and res["tokens"] == sum(map(len, docs))
    assert res["bytes"] == sum(len(s.encode()) for s in SENTENCES)
    # the same documents as text, each after <|endoftext|>: identical NLL
    stream = np.concatenate([[tokenizer.eot_id] + d for d in docs])
    nll = sliding_window_nll(memorizing_model, stream, max_length=64)
    keep = stream[1:] != tokenizer.eot_id
    assert res["bpb"] == pytest.approx(nll[keep].sum() / (res["bytes"] * math.log(2)), rel=1e-9)
    uniform_bpb = res["tokens"] * math.log2(tokenizer.vocab_size) / res["bytes"]
    assert res["bpb"] < 0.25 * uniform_bpb  # memorised text is cheap
    # shards written for another vocabulary are refused
    write_token_shard(tmp_path / "bad" / "val" / "s.arrow", [[1, 2, 70000]], pa.uint32())
    with pytest.raises(ValueError, match="outside the tokenizer"):
        evaluate_token_shards(memorizing_model, tokenizer, tmp_path / "bad", params)


# ----------------------------------------------------------------------------- evaluate() and the CLI


def test_evaluate_and_cli_write_results(random_model, tokenizer, tmp_path, capsys):
    results = evaluate(random_model, tokenizer, "hellaswag,piqa,lambada", eval_dir(), limit=8, batch_size=16)
    assert set(results) == {"hellaswag", "piqa", "lambada"}
    assert all(r["n"] == 8 for r in results.values())
    assert 0.0 <= results["piqa"]["acc"] <= 1.0 and results["lambada"]["ppl"] > 1
    table = format_results_table(results)
    assert "hellaswag" in table and "acc_norm" in table

    tok_path = tmp_path / "tok.json"
    tokenizer.inner.save(str(tok_path))
    run_dir = tmp_path / "run"
    save_checkpoint(run_dir, 5, random_model)
    (run_dir / "tokenizer.json").write_bytes(tok_path.read_bytes())
    write_token_shard(run_dir / "tokens" / "val" / "s0.arrow", [tokenizer.encode(s) for s in SENTENCES])
    parser = add_eval_arguments(argparse.ArgumentParser())
    args = parser.parse_args(["--checkpoint", str(run_dir), "--tasks", "bpb,arc_challenge", "--limit", "5",
                              "--data-dir", str(eval_dir()), "--device", "cpu", "--max-tokens", "3000",
                              "--text", str(require_shared("eval", "wikitext-2-raw-test.txt")),
                              "--tokens", str(run_dir / "tokens")])
    out = run_eval(args)
    saved = json.loads((run_dir / "checkpoints" / "step_00000005" / "eval.json").read_text())
    assert saved == json.loads(json.dumps(out))
    assert set(saved) == {"bpb", "bpb_text", "arc_challenge"}
    assert saved["arc_challenge"]["n"] == 5 and saved["bpb_text"]["tokens"] == 3000
    assert abs(saved["bpb_text"]["bits_per_token"] - math.log2(tokenizer.vocab_size)) < 0.1
    printed = capsys.readouterr().out
    assert "arc_challenge" in printed and "bpb_text" in printed
