"""Tests of model/train.py (and model/flops.py): learning real text, exact resume, NaN policy, CLI."""

from __future__ import annotations

import argparse
import json
import math
import os
import signal

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from pipeline.paths import require_shared
from model.checkpoint import list_checkpoints, load_model_for_inference
from model.corridor.token_shards import chunk_documents, write_token_set
from model.flops import flops_per_token, matmul_params, mfu, peak_flops_for_device
from model.gpt import GPT, config_from_preset
from model.train import (NonFiniteLossError, TrainConfig, add_arguments, config_from_args, lr_at, param_groups,
                         train)

EOT = 256  # byte-level "tokenizer": ids 0..255 are bytes, 256 ends a document
TEXT_BYTES = 300_000


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def shakespeare_tokens(tmp_path_factory):
    """tinyshakespeare as byte tokens, one document per paragraph; 90% train, 10% val."""
    text = require_shared("text", "tinyshakespeare.txt").read_bytes()[:TEXT_BYTES]
    out = tmp_path_factory.mktemp("tokens")
    cut = int(len(text) * 0.9)

    def docs(b):
        return [list(p) + [EOT] for p in b.split(b"\n\n") if p]

    write_token_set(out, {"train": chunk_documents(docs(text[:cut]), 400), "val": chunk_documents(docs(text[cut:]), 400)},
                    vocab_size=257, eot_id=EOT, tokenizer_json='{"model": {"type": "bytes"}}')
    counts = np.bincount(np.frombuffer(text, np.uint8), minlength=256) / len(text)
    counts = counts[counts > 0]
    return out, float(-(counts * np.log(counts)).sum())


def tiny(tokens, out, **kw) -> TrainConfig:
    values = dict(tokens=str(tokens), out=str(out), preset="tiny", block_size=32, batch_size=4, max_steps=10,
                  lr=3e-3, warmup=3, eval_every=0, eval_steps=4, ckpt_every=0, log_every=1, device="cpu",
                  dtype="float32", progress=False, seed=7)
    values.update(kw)
    return TrainConfig(**values)


def read_log(run_dir):
    return [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]


def test_tiny_model_learns_shakespeare_well_below_unigram_entropy(shakespeare_tokens, tmp_path):
    tokens, unigram_entropy = shakespeare_tokens
    assert 3.0 < unigram_entropy < 3.6  # nats per byte
    run = tmp_path / "run"
    summary = train(tiny(tokens, run, block_size=64, batch_size=8, max_steps=300, warmup=20, eval_every=150,
                         eval_steps=8, log_every=10, ckpt_every=150, lr=5e-3))
    assert summary["finished"] and summary["steps"] == 300 and summary["skipped_steps"] == 0
    assert summary["val_loss"] < unigram_entropy - 0.7, summary
    assert summary["final_loss"] < unigram_entropy - 0.7, summary
    log = read_log(run)
    assert [r["step"] for r in log][-1] == 300
    assert log[0]["loss"] > log[-1]["loss"] + 0.5
    assert {"step", "loss", "lr", "tokens_per_s", "mfu"} <= set(log[0]) and log[0]["mfu"] is None  # CPU
    assert [r["step"] for r in log if "val_loss" in r] == [150, 300]
    assert (run / "tokenizer.json").read_text() == '{"model": {"type": "bytes"}}'
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["vocab_size"] == 320 and config["data"]["vocab_size"] == 257  # padded to 64
    assert [s for s, _ in list_checkpoints(run)] == [150, 300]
    model, cfg, tok = load_model_for_inference(run)
    assert tok == str(run / "tokenizer.json") and cfg.block_size == 64
    # the trained model prefers real English continuations: "the" after " th" beats "thq"
    ids = torch.tensor([list(b"And the king said to th")])
    with torch.no_grad():
        probs = torch.softmax(model(ids)[0][0, -1], -1)
    assert probs[ord("e")] > 10 * probs[ord("q")]


def test_interrupted_and_resumed_run_is_bit_identical(shakespeare_tokens, tmp_path):
    tokens, _ = shakespeare_tokens
    common = dict(max_steps=10, ckpt_every=3, eval_every=4, grad_accum=2, prefetch=2)
    straight = train(tiny(tokens, tmp_path / "a", **common))
    first = train(tiny(tokens, tmp_path / "b", stop_at_step=5, **common))
    assert first["steps"] == 5 and not first["finished"]
    assert [s for s, _ in list_checkpoints(tmp_path / "b")][-1] == 5
    # the run died after step 7: its log has lines beyond the checkpoint, which resume must replay
    with open(tmp_path / "b" / "log.jsonl", "a") as f:
        f.write(json.dumps({"step": 6, "loss": 123.0}) + "\n" + '{"step": 7, "lo')
    with pytest.raises(FileExistsError, match="--resume"):
        train(tiny(tokens, tmp_path / "b", **common))
    resumed = train(tiny(tokens, tmp_path / "b", resume=True, **common))
    assert resumed["start_step"] == 5 and resumed["steps"] == 10 and resumed["finished"]
    log_a, log_b = read_log(tmp_path / "a"), read_log(tmp_path / "b")
    assert [r["step"] for r in log_b] == list(range(1, 11))
    assert [r["loss"] for r in log_a] == [r["loss"] for r in log_b]  # exact, not approximate
    assert [r.get("val_loss") for r in log_a] == [r.get("val_loss") for r in log_b]
    wa = load_file(str(tmp_path / "a" / "checkpoints" / "step_00000010" / "model.safetensors"))
    wb = load_file(str(tmp_path / "b" / "checkpoints" / "step_00000010" / "model.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert resumed["tokens_seen"] == straight["tokens_seen"] == 10 * 2 * 4 * 32


@pytest.mark.slow
def test_compiled_and_bf16_paths_agree_with_eager_float32(shakespeare_tokens, tmp_path):
    """The GPU defaults (torch.compile, bf16 autocast) run here on CPU (inductor's C++ backend, CPU autocast)."""
    tokens, _ = shakespeare_tokens
    common = dict(max_steps=6, ckpt_every=3, eval_every=6)
    eager = train(tiny(tokens, tmp_path / "eager", **common))
    # compiled, interrupted at step 3 and resumed (a fresh compile of a reloaded model)
    torch._dynamo.reset()
    first = train(tiny(tokens, tmp_path / "compiled", compile=True, stop_at_step=3, **common))
    compiled = train(tiny(tokens, tmp_path / "compiled", compile=True, resume=True, **common))
    from torch._dynamo.utils import counters
    assert counters["stats"]["unique_graphs"] >= 2  # dynamo really captured graphs (train and eval modes)
    assert first["steps"] == 3 and compiled["finished"] and compiled["start_step"] == 3
    bf16 = train(tiny(tokens, tmp_path / "bf16", dtype="bfloat16", **common))
    ref = read_log(tmp_path / "eager")
    for name, tol in (("compiled", 1e-4), ("bf16", 2e-2)):
        log = read_log(tmp_path / name)
        assert [r["step"] for r in log] == [r["step"] for r in ref] == list(range(1, 7))
        assert [r["loss"] for r in log] == pytest.approx([r["loss"] for r in ref], abs=tol), name
        assert log[-1]["val_loss"] == pytest.approx(ref[-1]["val_loss"], abs=tol), name
        w = load_file(str(tmp_path / name / "checkpoints" / "step_00000006" / "model.safetensors"))
        w_ref = load_file(str(tmp_path / "eager" / "checkpoints" / "step_00000006" / "model.safetensors"))
        assert w.keys() == w_ref.keys()  # no "_orig_mod." prefixes from the compile wrapper
        assert all(w[k].dtype == torch.float32 for k in w)  # bf16 autocast keeps float32 master weights
        assert all(torch.allclose(w[k], w_ref[k], atol=10 * tol) for k in w), name
    assert bf16["val_loss"] != eager["val_loss"]  # autocast really ran in bf16
    assert json.loads((tmp_path / "compiled" / "config.json").read_text())["train"]["compile"] is True
    # the summary's throughput leaves out the first step, which pays for compilation
    step_s = 4 * 32 / first["tokens_per_s"]  # steady-state seconds per step (4 sequences of 32 tokens)
    assert first["first_step_s"] > 10 * step_s
    assert compiled["tokens_per_s"] > 0 and eager["first_step_s"] > 0


def test_mfu_is_logged_against_the_given_peak(shakespeare_tokens, tmp_path):
    tokens, _ = shakespeare_tokens
    summary = train(tiny(tokens, tmp_path / "r", max_steps=4, peak_tflops=0.001))  # a 1 GFLOP/s "device"
    fpt = summary["flops_per_token"]
    assert fpt == flops_per_token(config_from_preset("tiny", 320, block_size=32))
    for record in read_log(tmp_path / "r"):
        assert record["mfu"] == pytest.approx(record["tokens_per_s"] * fpt / 1e9, rel=1e-9)
    assert summary["mfu"] == pytest.approx(summary["tokens_per_s"] * fpt / 1e9, rel=1e-9)


def poison_forward(monkeypatch, bad_calls):
    """Make GPT's training forward return a NaN loss on the given (1-based) call numbers."""
    original = GPT.forward
    calls = {"n": 0}

    def forward(self, idx, targets=None, kv_cache=None, start_pos=0):
        logits, loss = original(self, idx, targets, kv_cache, start_pos)
        if targets is not None and torch.is_grad_enabled():
            calls["n"] += 1
            if calls["n"] in bad_calls:
                loss = loss * float("nan")
        return logits, loss

    monkeypatch.setattr(GPT, "forward", forward)


def test_nan_policy_skip_drops_the_update_and_counts(shakespeare_tokens, tmp_path, monkeypatch):
    tokens, _ = shakespeare_tokens
    poison_forward(monkeypatch, {3, 4})
    summary = train(tiny(tokens, tmp_path / "r", max_steps=6, ckpt_every=2, keep_last=0))
    assert summary["skipped_steps"] == 2 and summary["finished"]
    log = read_log(tmp_path / "r")
    assert [r["step"] for r in log if r.get("skipped")] == [3, 4]
    assert all(math.isfinite(r["loss"]) for r in log if not r.get("skipped"))
    ckpts = dict(list_checkpoints(tmp_path / "r"))
    w2 = load_file(str(ckpts[2] / "model.safetensors"))
    w4 = load_file(str(ckpts[4] / "model.safetensors"))
    w6 = load_file(str(ckpts[6] / "model.safetensors"))
    assert all(torch.equal(w2[k], w4[k]) for k in w2)  # steps 3 and 4 changed nothing
    assert not all(torch.equal(w4[k], w6[k]) for k in w4)  # training went on


def test_nan_policy_stop_raises_with_the_step(shakespeare_tokens, tmp_path, monkeypatch):
    tokens, _ = shakespeare_tokens
    poison_forward(monkeypatch, {3})
    with pytest.raises(NonFiniteLossError, match="at step 3"):
        train(tiny(tokens, tmp_path / "r", max_steps=6, nan_policy="stop"))


def test_nan_policy_skip_gives_up_after_consecutive_bad_steps(shakespeare_tokens, tmp_path, monkeypatch):
    tokens, _ = shakespeare_tokens
    poison_forward(monkeypatch, set(range(2, 100)))
    with pytest.raises(NonFiniteLossError, match="3 consecutive non-finite steps ending at step 4"):
        train(tiny(tokens, tmp_path / "r", max_steps=8, max_bad_steps=3))


def test_sigterm_checkpoints_at_the_step_boundary_and_resume_finishes(shakespeare_tokens, tmp_path, monkeypatch):
    tokens, _ = shakespeare_tokens
    original = GPT.forward
    calls = {"n": 0}

    def forward(self, idx, targets=None, kv_cache=None, start_pos=0):
        if targets is not None and torch.is_grad_enabled():
            calls["n"] += 1
            if calls["n"] == 4:  # pre-emption notice arrives during step 4
                os.kill(os.getpid(), signal.SIGTERM)
        return original(self, idx, targets, kv_cache, start_pos)

    monkeypatch.setattr(GPT, "forward", forward)
    summary = train(tiny(tokens, tmp_path / "r", max_steps=8))
    assert summary["interrupted"] and summary["steps"] == 4 and not summary["finished"]
    assert [s for s, _ in list_checkpoints(tmp_path / "r")] == [4]
    assert signal.getsignal(signal.SIGTERM) is not None  # handler restored, test process still alive
    resumed = train(tiny(tokens, tmp_path / "r", max_steps=8, resume=True))
    assert resumed["start_step"] == 4 and resumed["finished"] and not resumed["interrupted"]


def test_learning_rate_schedules():
    cos = TrainConfig(tokens="t", out="o", lr=1.0, min_lr=0.1, warmup=10, max_steps=110)
    assert lr_at(0, cos) == pytest.approx(0.1) and lr_at(9, cos) == pytest.approx(1.0)
    assert lr_at(60, cos) == pytest.approx(0.55)  # half way through the cosine
    assert lr_at(110, cos) == pytest.approx(0.1) and lr_at(500, cos) == pytest.approx(0.1)
    values = [lr_at(s, cos) for s in range(10, 110)]
    assert all(a >= b for a, b in zip(values, values[1:]))
    wsd = TrainConfig(tokens="t", out="o", lr=1.0, min_lr=0.0, warmup=10, max_steps=110, schedule="wsd",
                      decay_frac=0.2)
    assert lr_at(50, wsd) == 1.0 and lr_at(87, wsd) == 1.0
    assert 0 < lr_at(100, wsd) < 1.0 and lr_at(109, wsd) == pytest.approx(0.0)
    assert TrainConfig(tokens="t", out="o", lr=2.0).min_lr is None and lr_at(10**6, TrainConfig(
        tokens="t", out="o", lr=2.0, max_steps=10, warmup=0)) == pytest.approx(0.2)


def test_weight_decay_groups_skip_norms_and_embedding():
    model = GPT(config_from_preset("tiny", 64))
    decay, no_decay = param_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    plain = {names[id(p)] for p in no_decay["params"]}
    assert "tok_emb.weight" in plain and "norm.weight" in plain and "blocks.0.attn_norm.weight" in plain
    assert "blocks.1.mlp.down_proj.weight" in decayed and not any("norm" in n for n in decayed)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_flops_formula_and_peaks():
    cfg = config_from_preset("gpt2-124m", 50257)
    with torch.device("meta"):
        model = GPT(cfg)
    norms = sum(p.numel() for n, p in model.named_parameters() if "norm" in n)
    assert matmul_params(cfg) == model.num_params(non_embedding=False) - norms  # tied: lm_head counted once
    assert flops_per_token(cfg) == 6 * matmul_params(cfg) + 12 * 12 * 768 * 1024
    assert peak_flops_for_device("NVIDIA H100 80GB HBM3") == 989e12
    assert peak_flops_for_device("NVIDIA H200") == 989e12
    assert peak_flops_for_device("NVIDIA A100-SXM4-80GB") == 312e12
    assert peak_flops_for_device("NVIDIA H100 PCIe") < 989e12
    assert peak_flops_for_device("cpu") is None and mfu(1e6, 1e9, None) is None
    # llm.c's GPT-2 124M anchor: ~468K tok/s per H100 is ~40% MFU
    assert 0.35 < mfu(468e3, flops_per_token(cfg), 989e12) < 0.45


def test_cli_flags_override_config_file_and_unknown_keys_fail(tmp_path):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    cfg_file = tmp_path / "train.yaml"
    cfg_file.write_text("preset: tiny\nlr: 0.01\nbatch_size: 3\nmodel:\n  n_layer: 3\n")
    args = parser.parse_args(["--config", str(cfg_file), "--tokens", "tok", "--out", "run", "--lr", "0.002",
                              "--no-compile", "--resume", "--schedule", "wsd"])
    cfg = config_from_args(args)
    assert (cfg.preset, cfg.lr, cfg.batch_size, cfg.model, cfg.compile, cfg.resume, cfg.schedule) == \
           ("tiny", 0.002, 3, {"n_layer": 3}, False, True, "wsd")
    assert config_from_args(parser.parse_args(["--tokens", "t", "--out", "o"])).lr == TrainConfig().lr
    cfg_file.write_text('{"learning_rate": 0.1}')
    with pytest.raises(ValueError, match="learning_rate"):
        config_from_args(parser.parse_args(["--config", str(cfg_file)]))
    with pytest.raises(ValueError, match="nan_policy"):
        TrainConfig(tokens="t", out="o", nan_policy="ignore").validate()
    with pytest.raises(ValueError, match="vocab_size"):
        TrainConfig(tokens="t", out="o", model={"vocab_size": 5}).validate()
