"""Tests for model/generate.py: KV-cache consistency, padded batches, decoding modes, stops, beams."""

from __future__ import annotations

import argparse

import pytest
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer

from pipeline.paths import require_shared
from model.checkpoint import save_checkpoint
from model.evaluate.cli import add_generate_arguments, run_generate
from model.evaluate.scoring import TextTokenizer
from model.generate import (
    GenerationParams,
    beam_search_ids,
    filter_logits,
    generate,
    generate_ids,
    padded_forward,
)
from model.gpt import GPT, GPTConfig


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tokenizer(shakespeare_bpe) -> TextTokenizer:
    """A 512-token byte-level BPE trained on real text (the session's ``shakespeare_bpe``)."""
    return TextTokenizer(Tokenizer.from_file(str(shakespeare_bpe)))


@pytest.fixture(scope="module")
def model(tokenizer) -> GPT:
    """A random tiny GPT with grouped-query attention; weights scaled up so its choices are sharp."""
    torch.manual_seed(7)
    m = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, n_layer=2, n_head=4, n_kv_head=2, n_embd=64, block_size=96))
    with torch.no_grad():
        for p in m.parameters():
            if p.dim() > 1:
                p.mul_(8.0)
    return m.eval()


def reference_greedy(model, prompt, n):
    """Greedy decoding without any cache: a full forward per new token."""
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(n):
            logits = model(torch.tensor([ids]))[0][0, -1]
            ids.append(int(logits.argmax()))
    return ids[len(prompt):]


def sequence_logprob(model, prompt, continuation):
    with torch.no_grad():
        x = torch.tensor([list(prompt) + list(continuation)])
        logp = F.log_softmax(model(x[:, :-1])[0][0], dim=-1)
    return sum(float(logp[len(prompt) - 1 + j, t]) for j, t in enumerate(continuation))


def test_cached_and_uncached_logits_agree(model):
    x = torch.randint(0, model.config.vocab_size, (3, 30), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        full = model(x)[0]
        cache = model.make_kv_cache(3, 30)
        parts = [model(x[:, :11], kv_cache=cache, start_pos=0)[0]]
        for t in range(11, 30):
            parts.append(model(x[:, t:t + 1], kv_cache=cache, start_pos=t)[0])
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=1e-4, rtol=1e-4)


def test_padded_forward_equals_each_sequence_alone(model):
    g = torch.Generator().manual_seed(1)
    lengths = [5, 17, 11]
    seqs = [torch.randint(0, model.config.vocab_size, (n,), generator=g) for n in lengths]
    longest = max(lengths)
    batch = torch.zeros((3, longest), dtype=torch.long)
    for b, s in enumerate(seqs):
        batch[b, longest - len(s):] = s
    pad_left = torch.tensor([longest - n for n in lengths])
    with torch.no_grad():
        cache = model.make_kv_cache(3, longest + 4)
        padded = padded_forward(model, batch, pad_left, cache, 0)
        step = padded_forward(model, torch.tensor([[3], [4], [5]]), pad_left, cache, longest)
        for b, s in enumerate(seqs):
            alone = model(s[None])[0][0]
            torch.testing.assert_close(padded[b, longest - len(s):], alone, atol=1e-4, rtol=1e-4)
            nxt = model(torch.cat([s, torch.tensor([3 + b])])[None])[0][0, -1]
            torch.testing.assert_close(step[b, 0], nxt, atol=1e-4, rtol=1e-4)


def test_greedy_with_cache_matches_recomputation_and_batches(model):
    g = torch.Generator().manual_seed(2)
    prompts = [torch.randint(0, model.config.vocab_size, (n,), generator=g).tolist() for n in (4, 13, 9)]
    params = GenerationParams(max_new_tokens=12, temperature=0.0, stop_at_eot=False)
    batched = generate_ids(model, prompts, params)
    for prompt, (out, reason) in zip(prompts, batched):
        assert out == reference_greedy(model, prompt, 12) and reason == "length"
        assert generate_ids(model, [prompt], params)[0][0] == out


def test_sampling_is_deterministic_under_a_seed(model, tokenizer):
    prompts = ["First Citizen:", "To be, or not"]
    for kwargs in ({}, {"top_k": 20}, {"top_p": 0.9}, {"temperature": 0.7, "top_k": 50, "top_p": 0.95}):
        a = generate(model, tokenizer, prompts, GenerationParams(max_new_tokens=16, seed=123, stop_at_eot=False, **kwargs))
        b = generate(model, tokenizer, prompts, GenerationParams(max_new_tokens=16, seed=123, stop_at_eot=False, **kwargs))
        c = generate(model, tokenizer, prompts, GenerationParams(max_new_tokens=16, seed=124, stop_at_eot=False, **kwargs))
        assert [x.token_ids for x in a] == [x.token_ids for x in b]
        assert [x.token_ids for x in a] != [x.token_ids for x in c], kwargs
    # top-k 1 and a tiny nucleus are greedy, whatever the seed
    greedy = generate(model, tokenizer, prompts, GenerationParams(max_new_tokens=16, temperature=0, stop_at_eot=False))
    for kwargs in ({"top_k": 1, "seed": 5}, {"top_p": 1e-6, "seed": 9}):
        out = generate(model, tokenizer, prompts, GenerationParams(max_new_tokens=16, stop_at_eot=False, **kwargs))
        assert [x.token_ids for x in out] == [x.token_ids for x in greedy]


def test_filter_logits_keeps_top_k_and_the_nucleus():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assert torch.isfinite(filter_logits(logits, top_k=2)).tolist() == [[True, True, False, False]]
    assert torch.isfinite(filter_logits(logits, top_p=0.8)).tolist() == [[True, True, False, False]]
    assert torch.isfinite(filter_logits(logits, top_p=0.81)).tolist() == [[True, True, True, False]]
    assert torch.isfinite(filter_logits(logits, top_p=0.1)).tolist() == [[True, False, False, False]]


def test_one_beam_is_greedy_and_beam_scores_are_true_logprobs(model, tokenizer):
    prompt = tokenizer.encode("ROMEO: What say you")
    greedy = generate_ids(model, [prompt], GenerationParams(max_new_tokens=10, temperature=0, stop_at_eot=False))[0][0]
    one, reason, score = beam_search_ids(model, prompt, GenerationParams(max_new_tokens=10, num_beams=1,
                                                                         stop_at_eot=False))
    assert one == greedy and reason == "length"
    assert score == pytest.approx(sequence_logprob(model, prompt, greedy), abs=1e-3)
    for beams in (3, 5):
        ids, _, score = beam_search_ids(model, prompt, GenerationParams(max_new_tokens=10, num_beams=beams,
                                                                        length_penalty=0.0, stop_at_eot=False))
        assert len(ids) == 10
        assert score == pytest.approx(sequence_logprob(model, prompt, ids), abs=1e-3)
    # generate() with beams returns the beam search's answer, decoded
    params = GenerationParams(max_new_tokens=10, num_beams=2, stop_at_eot=False)
    out = generate(model, tokenizer, "ROMEO: What say you", params)[0]
    ids, _, score = beam_search_ids(model, prompt, params)
    assert out.token_ids == ids and out.text == tokenizer.decode(ids) and out.score == pytest.approx(score)


def test_stop_tokens_and_stop_strings(model, tokenizer):
    prompt = tokenizer.encode("KING HENRY:")
    free = generate_ids(model, [prompt], GenerationParams(max_new_tokens=12, temperature=0, stop_at_eot=False))[0][0]
    k = next(i for i in range(2, 12) if free[i] not in free[:i])
    stopped, reason = generate_ids(model, [prompt], GenerationParams(max_new_tokens=12, temperature=0,
                                                                     stop_token_ids=(free[k],)))[0]
    assert stopped == free[:k] and reason == "stop_token"
    text = tokenizer.decode(free)
    stop = text[len(text) // 2:len(text) // 2 + 2]
    assert stop.strip(), "the stop string should be visible text"
    out = generate(model, tokenizer, "KING HENRY:", GenerationParams(max_new_tokens=12, temperature=0, stop=(stop,),
                                                                     stop_at_eot=False))[0]
    assert out.text == text[:text.index(stop)] and out.finish_reason == "stop_string"
    ids, reason, _ = beam_search_ids(model, prompt, GenerationParams(max_new_tokens=12, num_beams=1, stop=(stop,),
                                                                     stop_at_eot=False), tokenizer)
    assert reason == "stop_string" and tokenizer.decode(ids).startswith(out.text + stop)


def test_bad_settings_are_errors(model, tokenizer):
    for bad in ({"temperature": -1}, {"top_k": 0}, {"top_p": 0.0}, {"num_beams": 0}, {"stop": ("",)}):
        with pytest.raises(ValueError):
            generate(model, tokenizer, "x", GenerationParams(**bad))
    with pytest.raises(ValueError, match="context length"):
        generate(model, tokenizer, "x", GenerationParams(max_new_tokens=96))


def test_generate_cli(model, tokenizer, tmp_path, capsys):
    run_dir = tmp_path / "run"
    save_checkpoint(run_dir, 1, model)
    tokenizer.inner.save(str(run_dir / "tokenizer.json"))
    parser = add_generate_arguments(argparse.ArgumentParser())
    args = parser.parse_args(["--checkpoint", str(run_dir), "--prompt", "First", "--prompt", "Second Citizen:",
                              "--max-new-tokens", "8", "--temperature", "0", "--device", "cpu", "--no-stop-at-eot"])
    outs = run_generate(args)
    assert len(outs) == 2 and all(len(o.token_ids) == 8 for o in outs)
    expected = generate(model, tokenizer, ["First", "Second Citizen:"],
                        GenerationParams(max_new_tokens=8, temperature=0, stop_at_eot=False))
    assert [o.text for o in outs] == [e.text for e in expected]
    assert "Second Citizen:" in capsys.readouterr().out
