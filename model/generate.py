"""Text generation from a trained GPT: greedy, temperature / top-k / top-p sampling, beam search.

All modes decode with the model's KV cache (one prefill over the prompt, then one token per step).

Batched prompts of different lengths are left-padded into one batch. ``model/gpt.py``'s forward
takes neither a padding mask nor per-sequence positions, so for a ragged batch this module runs the
model's own layers (``padded_forward``) with both: pad slots are masked out of attention and each
sequence's rotary positions start at 0 where its real tokens start. The result equals running each
prompt alone (tested); a batch whose prompts have the same length goes through ``GPT.forward``.

Stopping: a sequence ends at the end-of-text token (unless ``stop_at_eot`` is off), at any token in
``stop_token_ids``, at any ``stop`` string (the text is cut before it), or after ``max_new_tokens``.

Sampling is reproducible: with a ``seed`` the draws come from a private ``torch.Generator`` on the
CPU, so the same seed gives the same text on any device.

Beam search keeps ``num_beams`` hypotheses per prompt, ranked by summed log-probability; a
hypothesis that ends (stop token) leaves the beam, and the answer is the best finished or live one by
``sum_logprob / length ** length_penalty``. With one beam this is greedy decoding exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn.functional as F

from model.gpt import rotary_tables, rotate_half


@dataclass
class GenerationParams:
    """Decoding settings. ``temperature == 0`` means greedy; ``num_beams > 1`` means beam search."""

    max_new_tokens: int = 64
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    num_beams: int = 1
    length_penalty: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = field(default_factory=tuple)
    stop_token_ids: tuple[int, ...] = field(default_factory=tuple)
    stop_at_eot: bool = True

    def check(self) -> None:
        if self.max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be >= 0, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")
        if self.top_p is not None and not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.num_beams < 1:
            raise ValueError(f"num_beams must be >= 1, got {self.num_beams}")
        if any(not s for s in self.stop):
            raise ValueError("stop strings must not be empty")


@dataclass
class Generation:
    """One result: the prompt's ids, the generated ids and text, and why generation ended."""

    prompt_ids: list[int]
    token_ids: list[int]
    text: str
    finish_reason: str  # "stop_token" | "stop_string" | "length"
    score: float | None = None  # beam search: summed log-probability


# ----------------------------------------------------------------------------- model access


def model_context_length(model) -> int:
    return int(model.config.block_size)


def padded_forward(model, idx: torch.Tensor, pad_left: torch.Tensor, kv_cache, start_slot: int) -> torch.Tensor:
    """Logits (B, T, V) for a left-padded batch, run through the model's layers with a pad mask.

    ``idx`` holds slots start_slot..start_slot+T-1 of every row; row b's first ``pad_left[b]`` slots
    are padding. Keys/values go into ``kv_cache`` (a ``model.make_kv_cache`` cache) at those slots.
    Positions for rotary embeddings are ``slot - pad_left[b]``.
    """
    cfg = model.config
    B, T = idx.shape
    device = idx.device
    slots = torch.arange(start_slot, start_slot + T, device=device)
    positions = (slots[None, :] - pad_left[:, None]).clamp(min=0)  # (B, T)
    needed = int(positions.max()) + 1
    if needed > model.rope_cos.shape[0]:
        cos_table, sin_table = rotary_tables(cfg.head_dim, needed, cfg.rope_theta, device=device)
    else:
        cos_table, sin_table = model.rope_cos, model.rope_sin
    cos = cos_table[positions][:, None]  # (B, 1, T, hd)
    sin = sin_table[positions][:, None]
    end = start_slot + T
    key_slots = torch.arange(end, device=device)
    # query at slot s of row b sees key slots j with pad_left[b] <= j <= s
    allowed = (key_slots[None, None, :] <= slots[None, :, None]) & (key_slots[None, None, :] >= pad_left[:, None, None])
    # a pad query would see no key at all (NaN in softmax): let it see itself; its output is unused
    allowed = allowed | (key_slots[None, None, :] == slots[None, :, None])
    mask = allowed[:, None]  # (B, 1, T, end)
    x = model.tok_emb(idx)
    for layer, block in enumerate(model.blocks):
        attn = block.attn
        h = block.attn_norm(x)
        q = attn.q_proj(h).view(B, T, attn.n_head, attn.head_dim).transpose(1, 2)
        k = attn.k_proj(h).view(B, T, attn.n_kv_head, attn.head_dim).transpose(1, 2)
        v = attn.v_proj(h).view(B, T, attn.n_kv_head, attn.head_dim).transpose(1, 2)
        c, s = cos.to(q.dtype), sin.to(q.dtype)
        q = q * c + rotate_half(q) * s
        k = k * c + rotate_half(k) * s
        k, v = kv_cache.update(layer, start_slot, k, v)
        if attn.n_kv_head != attn.n_head:
            rep = attn.n_head // attn.n_kv_head
            k = k.repeat_interleave(rep, dim=1)
            v = v.repeat_interleave(rep, dim=1)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        y = y.transpose(1, 2).contiguous().view(B, T, attn.n_head * attn.head_dim)
        x = x + attn.o_proj(y)
        x = x + block.mlp(block.mlp_norm(x))
    x = model.norm(x)
    kv_cache.length = end
    return model.lm_head(x).float()


def step_logits(model, idx: torch.Tensor, pad_left: torch.Tensor, kv_cache, start_slot: int) -> torch.Tensor:
    """Logits for ``idx`` at ``start_slot`` with the cache: GPT.forward when nothing is padded."""
    if int(pad_left.max()) == 0:
        logits, _ = model(idx, kv_cache=kv_cache, start_pos=start_slot)
        return logits
    return padded_forward(model, idx, pad_left, kv_cache, start_slot)


# ----------------------------------------------------------------------------- token choice


def filter_logits(logits: torch.Tensor, top_k: int | None = None, top_p: float | None = None) -> torch.Tensor:
    """Logits with everything outside the top-k and outside the top-p nucleus set to -inf.

    The nucleus keeps the smallest set of most likely tokens whose probability reaches ``top_p``
    (the most likely token is always kept).
    """
    out = logits.clone()
    if top_k is not None and top_k < out.shape[-1]:
        kth = torch.topk(out, top_k, dim=-1).values[..., -1:]
        out[out < kth] = float("-inf")
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(out, dim=-1, descending=True)
        probs = F.softmax(sorted_logits, dim=-1)
        before = torch.cumsum(probs, dim=-1) - probs  # probability mass of the better tokens
        drop_sorted = before >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        out[drop] = float("-inf")
    return out


def choose_next_tokens(logits: torch.Tensor, params: GenerationParams, generator: torch.Generator | None
                       ) -> torch.Tensor:
    """Next token per row (B,), greedy when temperature is 0, else sampled."""
    if params.temperature == 0:
        return logits.argmax(dim=-1)
    scaled = filter_logits(logits.float() / params.temperature, params.top_k, params.top_p)
    probs = F.softmax(scaled, dim=-1).cpu()
    return torch.multinomial(probs, 1, generator=generator)[:, 0].to(logits.device)


# ----------------------------------------------------------------------------- helpers


def _stop_ids(tokenizer, params: GenerationParams) -> set[int]:
    ids = set(int(t) for t in params.stop_token_ids)
    if params.stop_at_eot and tokenizer is not None and tokenizer.eot_id is not None:
        ids.add(tokenizer.eot_id)
    return ids


def _cut_at_stop_string(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    cut = min((text.find(s) for s in stops if s in text), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def _fit_prompt(ids: list[int], context: int, max_new_tokens: int) -> list[int]:
    if max_new_tokens >= context:
        raise ValueError(f"max_new_tokens ({max_new_tokens}) must be smaller than the model's context "
                         f"length ({context})")
    if not ids:
        raise ValueError("empty prompt: give at least one token (e.g. the end-of-text token)")
    return ids[-(context - max_new_tokens):]


# ----------------------------------------------------------------------------- decoding


@torch.no_grad()
def generate_ids(model, prompts: Sequence[Sequence[int]], params: GenerationParams, tokenizer=None
                 ) -> list[tuple[list[int], str]]:
    """Greedy or sampled continuation ids for a batch of token prompts (with finish reasons).

    Stop strings are checked by decoding with ``tokenizer`` when given.
    """
    params.check()
    device = next(model.parameters()).device
    context = model_context_length(model)
    prompts = [_fit_prompt(list(p), context, params.max_new_tokens) for p in prompts]
    B = len(prompts)
    longest = max(len(p) for p in prompts)
    pad_left = torch.tensor([longest - len(p) for p in prompts], device=device)
    pad_id = prompts[0][0]
    idx = torch.full((B, longest), pad_id, dtype=torch.long, device=device)
    for b, p in enumerate(prompts):
        idx[b, longest - len(p):] = torch.tensor(p, dtype=torch.long)
    generator = None
    if params.seed is not None:
        generator = torch.Generator(device="cpu")
        generator.manual_seed(params.seed)
    stop_ids = _stop_ids(tokenizer, params)
    outputs: list[list[int]] = [[] for _ in range(B)]
    reasons = ["length"] * B
    done = [False] * B
    if params.max_new_tokens == 0:
        return [(o, r) for o, r in zip(outputs, reasons)]
    cache = model.make_kv_cache(B, longest + params.max_new_tokens)
    was_training = model.training
    model.eval()
    try:
        logits = step_logits(model, idx, pad_left, cache, 0)[:, -1]
        slot = longest
        for step in range(params.max_new_tokens):
            nxt = choose_next_tokens(logits, params, generator)
            for b in range(B):
                if done[b]:
                    continue
                token = int(nxt[b])
                if token in stop_ids:
                    done[b], reasons[b] = True, "stop_token"
                    continue
                outputs[b].append(token)
                if params.stop and tokenizer is not None:
                    _, hit = _cut_at_stop_string(tokenizer.decode(outputs[b]), params.stop)
                    if hit:
                        done[b], reasons[b] = True, "stop_string"
            if all(done) or step == params.max_new_tokens - 1:
                break
            logits = step_logits(model, nxt[:, None], pad_left, cache, slot)[:, -1]
            slot += 1
    finally:
        model.train(was_training)
    return list(zip(outputs, reasons))


@torch.no_grad()
def beam_search_ids(model, prompt: Sequence[int], params: GenerationParams, tokenizer=None
                    ) -> tuple[list[int], str, float]:
    """Beam search for one prompt: (best continuation ids, finish reason, summed log-probability)."""
    params.check()
    device = next(model.parameters()).device
    context = model_context_length(model)
    prompt = _fit_prompt(list(prompt), context, params.max_new_tokens)
    if params.max_new_tokens == 0:
        return [], "length", 0.0
    stop_ids = _stop_ids(tokenizer, params)
    nb = params.num_beams
    cache = model.make_kv_cache(nb, len(prompt) + params.max_new_tokens)
    idx = torch.tensor([prompt] * nb, dtype=torch.long, device=device)
    was_training = model.training
    model.eval()

    def normalized(score: float, length: int) -> float:
        return score / (max(length, 1) ** params.length_penalty)

    finished: list[tuple[float, list[int], str, float]] = []  # (normalized, ids, reason, score)
    try:
        logits, _ = model(idx, kv_cache=cache, start_pos=0)
        logprobs = F.log_softmax(logits[:, -1].float(), dim=-1)
        # all beams start identical: expand only the first so candidates are distinct
        beam_scores = torch.full((nb,), float("-inf"), device=device, dtype=torch.float64)
        beam_scores[0] = 0.0
        beams: list[list[int]] = [[] for _ in range(nb)]
        slot = len(prompt)
        for step in range(params.max_new_tokens):
            total = beam_scores[:, None] + logprobs.double()  # (live, V)
            flat = total.view(-1)
            k = min(nb, int(torch.isfinite(flat).sum()))
            top = torch.topk(flat, k)
            vocab = logprobs.shape[-1]
            new_beams, new_scores, parents, tokens = [], [], [], []
            for score, flat_index in zip(top.values.tolist(), top.indices.tolist()):
                parent, token = divmod(flat_index, vocab)
                ids = beams[parent] + [token]
                if token in stop_ids:
                    finished.append((normalized(score, len(ids)), beams[parent], "stop_token", score))
                    continue
                if params.stop and tokenizer is not None:
                    text, hit = _cut_at_stop_string(tokenizer.decode(ids), params.stop)
                    if hit:
                        finished.append((normalized(score, len(ids)), ids, "stop_string", score))
                        continue
                new_beams.append(ids)
                new_scores.append(score)
                parents.append(parent)
                tokens.append(token)
            if not new_beams or step == params.max_new_tokens - 1:
                beams, beam_scores = new_beams, torch.tensor(new_scores, dtype=torch.float64, device=device)
                break
            # keep the cache rows of the surviving parents (rows beyond the live count are unused)
            order = torch.tensor(parents, device=device)
            cache.k[:, :len(parents)] = cache.k[:, order]
            cache.v[:, :len(parents)] = cache.v[:, order]
            live = len(parents)
            step_in = torch.full((cache.batch_size, 1), tokens[0], dtype=torch.long, device=device)
            step_in[:live, 0] = torch.tensor(tokens, device=device)
            logits, _ = model(step_in, kv_cache=cache, start_pos=slot)
            slot += 1
            logprobs = F.log_softmax(logits[:live, -1].float(), dim=-1)
            beams, beam_scores = new_beams, torch.tensor(new_scores, dtype=torch.float64, device=device)
    finally:
        model.train(was_training)
    candidates = list(finished)
    for ids, score in zip(beams, beam_scores.tolist()):
        candidates.append((normalized(score, len(ids)), ids, "length", score))
    best = max(candidates, key=lambda c: c[0])
    return best[1], best[2], best[3]


def generate(model, tokenizer, prompts: Sequence[str] | str, params: GenerationParams | None = None
             ) -> list[Generation]:
    """Generate text for one or more prompts (see the module docstring for the modes)."""
    from model.evaluate.scoring import as_text_tokenizer

    params = params or GenerationParams()
    params.check()
    tok = as_text_tokenizer(tokenizer)
    if isinstance(prompts, str):
        prompts = [prompts]
    if not prompts:
        return []
    prompt_ids = []
    for text in prompts:
        ids = tok.encode(text)
        if not ids:
            if tok.eot_id is None:
                raise ValueError("empty prompt and the tokenizer has no end-of-text token to start from")
            ids = [tok.eot_id]
        prompt_ids.append(ids)
    results: list[Generation] = []
    if params.num_beams > 1:
        for ids in prompt_ids:
            out, reason, score = beam_search_ids(model, ids, params, tok)
            results.append(_finish(tok, ids, out, reason, params, score))
        return results
    for ids, (out, reason) in zip(prompt_ids, generate_ids(model, prompt_ids, params, tok)):
        results.append(_finish(tok, ids, out, reason, params, None))
    return results


def _finish(tok, prompt_ids, out_ids, reason, params, score) -> Generation:
    text = tok.decode(out_ids)
    if params.stop:
        text, hit = _cut_at_stop_string(text, params.stop)
        if hit:
            reason = "stop_string"
    return Generation(prompt_ids=list(prompt_ids), token_ids=list(out_ids), text=text, finish_reason=reason,
                      score=score if score is None or math.isfinite(score) else None)
