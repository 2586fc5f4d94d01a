"""Tests of model/gpt.py: config contract, causality, KV cache, loss masking, init, Llama equivalence."""

from __future__ import annotations

import math

import pytest
import torch

from model.gpt import GPT, GPTConfig, PRESETS, config_from_preset, rotate_half


def small_config(**kw) -> GPTConfig:
    values = dict(vocab_size=101, n_layer=2, n_head=4, n_embd=32, block_size=48)
    values.update(kw)
    return GPTConfig(**values)


def test_config_round_trip_and_unknown_keys():
    cfg = small_config(n_kv_head=2, mlp_hidden=96)
    assert GPTConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown key"):
        GPTConfig.from_dict({**cfg.to_dict(), "n_heads": 3})


@pytest.mark.parametrize("bad", [dict(n_embd=30), dict(n_kv_head=3), dict(n_layer=0), dict(n_embd=36, n_head=12)])
def test_config_rejects_inconsistent_shapes(bad):
    with pytest.raises(ValueError):
        small_config(**bad)


def test_derived_sizes():
    cfg = GPTConfig(n_embd=768)
    assert cfg.hidden_dim == 2048 and cfg.hidden_dim % 64 == 0  # 8/3 * 768 = 2048
    assert GPTConfig(n_embd=128, n_head=4).hidden_dim == 384  # 341.3 rounded up to a multiple of 64
    assert cfg.kv_heads == cfg.n_head and GPTConfig(n_head=12, n_kv_head=4).kv_heads == 4


def test_presets_exclude_vocab_and_build():
    assert {"tiny", "small", "gpt2-124m", "gpt2-350m", "1b"} <= set(PRESETS)
    assert all("vocab_size" not in p for p in PRESETS.values())
    cfg = config_from_preset("gpt2-124m", 50257)
    # count parameters analytically (meta device: no memory): 124M for GPT-2's shapes
    with torch.device("meta"):
        model = GPT(cfg)
    assert 120e6 < model.num_params(non_embedding=False) < 128e6
    assert model.num_params(non_embedding=False) - model.num_params() == 50257 * 768
    with pytest.raises(ValueError, match="unknown model preset"):
        config_from_preset("huge", 100)


def test_forward_shapes_and_loss_matches_manual_cross_entropy():
    torch.manual_seed(0)
    model = GPT(small_config())
    idx = torch.randint(0, 101, (3, 17))
    logits, loss = model(idx, idx)
    assert logits.shape == (3, 17, 101) and logits.dtype == torch.float32
    manual = -torch.log_softmax(logits, -1).gather(-1, idx[..., None]).mean()
    assert torch.allclose(loss, manual, atol=1e-6)
    assert model(idx)[1] is None


def test_ignore_index_excludes_positions_from_the_mean():
    torch.manual_seed(0)
    model = GPT(small_config())
    idx = torch.randint(0, 101, (2, 10))
    targets = idx.clone()
    targets[:, :6] = -100
    logits, loss = model(idx, targets)
    logp = torch.log_softmax(logits, -1)
    manual = -logp[:, 6:].gather(-1, idx[:, 6:, None]).mean()
    assert torch.allclose(loss, manual, atol=1e-6)


def test_causal_future_tokens_do_not_change_past_logits():
    torch.manual_seed(0)
    model = GPT(small_config()).eval()
    a = torch.randint(0, 101, (1, 20))
    b = a.clone()
    b[0, 12:] = (b[0, 12:] + 7) % 101
    la, lb = model(a)[0], model(b)[0]
    assert torch.allclose(la[0, :12], lb[0, :12], atol=1e-6)
    assert not torch.allclose(la[0, 12:], lb[0, 12:], atol=1e-3)


@pytest.mark.parametrize("kv_heads", [None, 2, 1])
def test_kv_cache_logits_equal_full_forward(kv_heads):
    torch.manual_seed(1)
    model = GPT(small_config(n_kv_head=kv_heads)).eval()
    idx = torch.randint(0, 101, (2, 30))
    with torch.no_grad():
        full, _ = model(idx)
        cache = model.make_kv_cache(batch_size=2, max_len=40)
        parts = [model(idx[:, :9], kv_cache=cache, start_pos=0)[0]]  # prefill T > 1 at 0
        parts.append(model(idx[:, 9:16], kv_cache=cache, start_pos=9)[0])  # prefill T > 1 at start_pos > 0
        for t in range(16, 30):  # one token at a time
            parts.append(model(idx[:, t:t + 1], kv_cache=cache, start_pos=t)[0])
    assert cache.length == 30
    assert torch.allclose(torch.cat(parts, dim=1), full, atol=1e-5)


def test_kv_cache_overflow_and_generation_past_block_size():
    torch.manual_seed(0)
    model = GPT(small_config(block_size=8)).eval()
    cache = model.make_kv_cache(1, 12)
    idx = torch.randint(0, 101, (1, 12))
    with torch.no_grad():
        out, _ = model(idx, kv_cache=cache)  # rotary tables extend beyond block_size
        full, _ = model(idx)
        assert torch.allclose(out, full, atol=1e-5)
        with pytest.raises(ValueError, match="overflow"):
            model(idx[:, :1], kv_cache=cache, start_pos=12)


def test_tied_embeddings_and_parameter_names():
    model = GPT(small_config())
    assert model.lm_head.weight is model.tok_emb.weight
    names = set(model.state_dict())
    for expected in ("tok_emb.weight", "norm.weight", "blocks.0.attn_norm.weight", "blocks.0.attn.q_proj.weight",
                     "blocks.0.attn.k_proj.weight", "blocks.0.attn.v_proj.weight", "blocks.0.attn.o_proj.weight",
                     "blocks.0.mlp_norm.weight", "blocks.0.mlp.gate_proj.weight", "blocks.0.mlp.up_proj.weight",
                     "blocks.0.mlp.down_proj.weight", "blocks.1.mlp.down_proj.weight"):
        assert expected in names
    assert not any("rope" in n for n in names)  # derived buffers are not persisted
    untied = GPT(small_config(tie_embeddings=False))
    assert untied.lm_head.weight is not untied.tok_emb.weight
    assert untied.num_params(non_embedding=False) == model.num_params(non_embedding=False) + 101 * 32


def test_init_scales():
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=512, n_layer=8, n_head=4, n_embd=256, block_size=16)
    model = GPT(cfg)
    assert abs(model.blocks[0].attn.q_proj.weight.std().item() - 0.02) < 0.002
    residual = 0.02 / math.sqrt(2 * cfg.n_layer)
    assert abs(model.blocks[3].attn.o_proj.weight.std().item() - residual) < 0.1 * residual
    assert abs(model.blocks[3].mlp.down_proj.weight.std().item() - residual) < 0.1 * residual
    assert torch.equal(model.norm.weight, torch.ones(256))


def test_rotate_half_convention():
    x = torch.arange(6.0)
    assert torch.equal(rotate_half(x), torch.tensor([-3.0, -4.0, -5.0, 0.0, 1.0, 2.0]))


def test_logits_equal_transformers_llama_with_renamed_weights():
    import transformers  # a dev dependency (pyproject [dev])
    torch.manual_seed(0)
    cfg = small_config(n_kv_head=2, rope_theta=500.0)
    model = GPT(cfg).eval()
    hf_cfg = transformers.LlamaConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.n_embd, intermediate_size=cfg.hidden_dim,
        num_hidden_layers=cfg.n_layer, num_attention_heads=cfg.n_head, num_key_value_heads=cfg.kv_heads,
        max_position_embeddings=cfg.block_size, rope_theta=cfg.rope_theta, rms_norm_eps=cfg.norm_eps,
        tie_word_embeddings=True, attention_bias=False, mlp_bias=False, hidden_act="silu")
    hf = transformers.LlamaForCausalLM(hf_cfg).eval()
    renamed = {}
    for k, v in model.state_dict().items():
        k = k.replace("tok_emb.", "model.embed_tokens.").replace("blocks.", "model.layers.")
        k = k.replace(".attn_norm.", ".input_layernorm.").replace(".mlp_norm.", ".post_attention_layernorm.")
        k = k.replace(".attn.", ".self_attn.")
        renamed["model.norm.weight" if k == "norm.weight" else k] = v
    missing, unexpected = hf.load_state_dict(renamed, strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}
    idx = torch.randint(0, cfg.vocab_size, (2, 24))
    with torch.no_grad():
        ours = model(idx)[0]
        theirs = hf(idx).logits
    assert torch.allclose(ours, theirs, atol=1e-5)
