"""Tests for model/export.py: a checkpoint exported to Hugging Face format loads offline with
transformers and gives the same logits, tokens and greedy text as our own model."""

from __future__ import annotations

import argparse
import json
import os

import pytest
import torch
from safetensors.torch import load_file

from pipeline.paths import require_shared
from model.checkpoint import save_checkpoint
from model.evaluate.cli import add_export_arguments, run_export
from model.evaluate.scoring import TextTokenizer
from model.export import LOGIT_TOLERANCE, ExportParams, export_model, llama_parameter_name
from model.generate import GenerationParams, generate
from model.gpt import GPT, GPTConfig

# transformers is a dev dependency (pip install -e .[dev]); imported inside the tests that need it


@pytest.fixture(scope="module", autouse=True)
def offline_and_one_thread():
    """No network for transformers; one torch thread (two shared cores are oversubscribed)."""
    before = torch.get_num_threads()
    saved = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="module")
def tokenizer_path(shakespeare_bpe):
    return shakespeare_bpe


def random_model(tie: bool, seed: int) -> GPT:
    """A random model with every weight perturbed (norm gains too), so a misplaced tensor shows."""
    torch.manual_seed(seed)
    config = GPTConfig(vocab_size=512, n_layer=2, n_head=4, n_kv_head=2, n_embd=64, block_size=64,
                       mlp_hidden=160, rope_theta=5000.0, norm_eps=1e-6, tie_embeddings=tie)
    model = GPT(config)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model.eval()


SAMPLE = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak."


@pytest.mark.parametrize("tie", [True, False])
def test_exported_model_matches_ours_in_transformers(tmp_path, tokenizer_path, tie):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = random_model(tie, seed=3 if tie else 4)
    run_dir = tmp_path / "run"
    save_checkpoint(run_dir, 10, model)
    (run_dir / "tokenizer.json").write_bytes(tokenizer_path.read_bytes())
    args = add_export_arguments(argparse.ArgumentParser()).parse_args(
        ["--checkpoint", str(run_dir), "--out", str(tmp_path / "hf")])
    out = run_export(args)
    names = {p.name for p in out.iterdir()}
    assert {"model.safetensors", "config.json", "generation_config.json", "tokenizer.json",
            "tokenizer_config.json", "special_tokens_map.json"} <= names
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".hf")]  # no temporary left behind

    cfg = json.loads((out / "config.json").read_text())
    assert cfg["architectures"] == ["LlamaForCausalLM"] and cfg["tie_word_embeddings"] is tie
    assert (cfg["hidden_size"], cfg["intermediate_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"],
            cfg["max_position_embeddings"], cfg["vocab_size"]) == (64, 160, 4, 2, 64, 512)
    assert cfg["rope_theta"] == 5000.0 and cfg["rms_norm_eps"] == 1e-6 and cfg["torch_dtype"] == "float32"
    weights = load_file(str(out / "model.safetensors"))
    assert ("lm_head.weight" in weights) is (not tie)
    assert "model.layers.1.self_attn.k_proj.weight" in weights

    hf = AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32, local_files_only=True).eval()
    hf_tok = AutoTokenizer.from_pretrained(str(out), local_files_only=True)
    ours = TextTokenizer(tokenizer_path)
    ids = hf_tok(SAMPLE, add_special_tokens=False)["input_ids"]
    assert ids == ours.encode(SAMPLE)
    assert hf_tok.eos_token == "<|endoftext|>" and hf_tok.eos_token_id == ours.eot_id == cfg["eos_token_id"]
    assert hf_tok.decode(ids) == SAMPLE

    x = torch.tensor([ids[:64]])
    with torch.no_grad():
        ref = model(x)[0]
        got = hf(x).logits.float()
    assert (got - ref).abs().max().item() < 1e-4
    assert ref.std().item() > 0.1  # the comparison is not between two flat outputs

    # greedy text agrees too (ours uses the KV cache, transformers its own)
    prompt = "First Citizen:"
    params = GenerationParams(max_new_tokens=12, temperature=0, stop_at_eot=False)
    ours_out = generate(model, ours, prompt, params)[0]
    with torch.no_grad():
        hf_ids = hf.generate(torch.tensor([ours.encode(prompt)]), max_new_tokens=12, do_sample=False,
                             eos_token_id=None, pad_token_id=ours.eot_id, min_new_tokens=12)
    assert hf_ids[0, len(ours.encode(prompt)):].tolist() == ours_out.token_ids


def test_bfloat16_export_and_errors(tmp_path, tokenizer_path):
    model = random_model(True, seed=5)
    out = export_model(model, tokenizer_path, tmp_path / "hf16", ExportParams(dtype="bfloat16"))
    weights = load_file(str(out / "model.safetensors"))
    assert all(t.dtype == torch.bfloat16 for t in weights.values())
    assert json.loads((out / "config.json").read_text())["torch_dtype"] == "bfloat16"
    with pytest.raises(ValueError, match="dtype"):
        export_model(model, tokenizer_path, tmp_path / "bad", ExportParams(dtype="int8"))
    with pytest.raises(FileNotFoundError, match="tokenizer"):
        export_model(model, tmp_path / "missing.json", tmp_path / "bad")
    assert not (tmp_path / "bad").exists()
    with pytest.raises(ValueError, match="no Llama counterpart"):
        llama_parameter_name("blocks.0.attn.qkv.weight")


@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "float32"])
@pytest.mark.parametrize("tie", [True, False])
def test_reduced_precision_export_loads_in_transformers_with_close_logits(tmp_path, tokenizer_path, dtype, tie):
    """`refinery export --dtype D`: every tensor in D, torch_dtype D in config.json, so transformers loads it in
    D with dtype="auto"; its logits, computed in D, are within LOGIT_TOLERANCE[D] of our float32 model's."""
    from transformers import AutoModelForCausalLM

    model = random_model(tie, seed=5 if tie else 6)
    run_dir = tmp_path / "run"
    save_checkpoint(run_dir, 1, model)
    (run_dir / "tokenizer.json").write_bytes(tokenizer_path.read_bytes())
    out = run_export(add_export_arguments(argparse.ArgumentParser()).parse_args(
        ["--checkpoint", str(run_dir), "--out", str(tmp_path / "hf"), "--dtype", dtype]))
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["torch_dtype"] == dtype
    assert {t.dtype for t in load_file(str(out / "model.safetensors")).values()} == {getattr(torch, dtype)}
    hf = AutoModelForCausalLM.from_pretrained(str(out), dtype="auto", local_files_only=True).eval()
    assert hf.dtype == getattr(torch, dtype)
    ids = TextTokenizer(tokenizer_path).encode(SAMPLE)[:64]
    x = torch.tensor([ids])
    with torch.no_grad():
        ref = model(x)[0]
        got = hf(x).logits.float()
    rel = ((got - ref).abs().max() / ref.abs().max()).item()
    print(f"\n{dtype} export (tied={tie}): max |dlogit| / max |logit| = {rel:.2e} "
          f"(tolerance {LOGIT_TOLERANCE[dtype]:.0e})")
    assert rel <= LOGIT_TOLERANCE[dtype], (dtype, rel)
    if dtype != "float32":  # the reduced precision really is in use: not bit-identical to float32
        assert rel > LOGIT_TOLERANCE["float32"]
