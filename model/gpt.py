"""A decoder-only transformer in the Llama style, in one readable file.

The architecture matches Hugging Face's ``LlamaForCausalLM`` exactly (RMSNorm before attention and
MLP, rotary position embeddings in the "rotate_half" convention with non-interleaved halves, grouped
query attention, SwiGLU MLP, no biases), so a checkpoint exports to Llama without any weight
permutation. Attention runs through ``torch.nn.functional.scaled_dot_product_attention`` (flash /
memory-efficient kernels where the device has them).

Parameter names (``GPT.state_dict()`` keys) and their Llama counterparts:

======================================  ===============================================
ours                                    transformers ``LlamaForCausalLM``
======================================  ===============================================
``tok_emb.weight``                      ``model.embed_tokens.weight``
``blocks.{i}.attn_norm.weight``         ``model.layers.{i}.input_layernorm.weight``
``blocks.{i}.attn.q_proj.weight``       ``model.layers.{i}.self_attn.q_proj.weight``
``blocks.{i}.attn.k_proj.weight``       ``model.layers.{i}.self_attn.k_proj.weight``
``blocks.{i}.attn.v_proj.weight``       ``model.layers.{i}.self_attn.v_proj.weight``
``blocks.{i}.attn.o_proj.weight``       ``model.layers.{i}.self_attn.o_proj.weight``
``blocks.{i}.mlp_norm.weight``          ``model.layers.{i}.post_attention_layernorm.weight``
``blocks.{i}.mlp.gate_proj.weight``     ``model.layers.{i}.mlp.gate_proj.weight``
``blocks.{i}.mlp.up_proj.weight``       ``model.layers.{i}.mlp.up_proj.weight``
``blocks.{i}.mlp.down_proj.weight``     ``model.layers.{i}.mlp.down_proj.weight``
``norm.weight``                         ``model.norm.weight``
``lm_head.weight``                      ``lm_head.weight`` (the same tensor as
                                        ``tok_emb.weight`` when ``tie_embeddings``)
======================================  ===============================================

Llama config equivalents: ``hidden_size = n_embd``, ``num_hidden_layers = n_layer``,
``num_attention_heads = n_head``, ``num_key_value_heads = config.kv_heads``,
``intermediate_size = config.hidden_dim``, ``max_position_embeddings = block_size``,
``rope_theta``, ``rms_norm_eps = norm_eps``, ``tie_word_embeddings = tie_embeddings``,
``hidden_act = "silu"``, ``attention_bias = False``, ``mlp_bias = False``.

Initialisation: every Linear and the embedding ~ Normal(0, 0.02); the two residual projections of
each block (``o_proj``, ``down_proj``) ~ Normal(0, 0.02 / sqrt(2 * n_layer)) (GPT-2's scaling, so the
residual stream's variance does not grow with depth); RMSNorm weights = 1.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from model.errors import UserValueError

IGNORE_INDEX = -100


@dataclass
class GPTConfig:
    """Shape of the model. ``None`` fields take derived defaults (see ``kv_heads``, ``hidden_dim``)."""

    vocab_size: int = 32768
    n_layer: int = 12
    n_head: int = 12
    n_kv_head: Optional[int] = None  # None = n_head (plain multi-head attention)
    n_embd: int = 768
    block_size: int = 1024  # the longest context trained on (rotary tables cover it)
    mlp_hidden: Optional[int] = None  # None = SwiGLU's 8/3 * n_embd rounded up to a multiple of 64
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    tie_embeddings: bool = True
    bidirectional: bool = False  # True: every token attends to every other (the masked-LM encoder, model/mlm.py)

    def __post_init__(self) -> None:
        for key in ("vocab_size", "n_layer", "n_head", "n_embd", "block_size"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise UserValueError(f"GPTConfig.{key} must be a positive integer, got {value!r}")
        if self.n_embd % self.n_head:
            raise UserValueError(f"GPTConfig: n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if self.head_dim % 2:
            raise UserValueError(f"GPTConfig: head dimension n_embd/n_head = {self.head_dim} must be even (rotary)")
        if self.n_kv_head is not None and (self.n_kv_head <= 0 or self.n_head % self.n_kv_head):
            raise UserValueError(
                f"GPTConfig: n_kv_head ({self.n_kv_head}) must be a positive divisor of n_head ({self.n_head})"
            )
        if self.mlp_hidden is not None and self.mlp_hidden <= 0:
            raise UserValueError(f"GPTConfig.mlp_hidden must be positive, got {self.mlp_hidden!r}")
        if self.rope_theta <= 0 or self.norm_eps <= 0:
            raise UserValueError("GPTConfig: rope_theta and norm_eps must be positive")

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def kv_heads(self) -> int:
        return self.n_head if self.n_kv_head is None else self.n_kv_head

    @property
    def hidden_dim(self) -> int:
        if self.mlp_hidden is not None:
            return self.mlp_hidden
        return 64 * math.ceil(8 * self.n_embd / 3 / 64)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "GPTConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise UserValueError(f"GPTConfig: unknown key(s) {unknown}; known keys are {sorted(known)}")
        return cls(**d)


# Model shapes by name. vocab_size is not here: it comes from the tokenizer (token manifest).
PRESETS: dict[str, dict] = {
    # for CPU tests: ~0.4M non-embedding parameters
    "tiny": dict(n_layer=2, n_head=4, n_embd=128, block_size=128),
    # a quick real run on one GPU (or a slow one on CPU): ~10M non-embedding parameters
    "small": dict(n_layer=6, n_head=6, n_embd=384, block_size=512),
    # GPT-2 small shapes (124M with GPT-2's 50,257 vocabulary)
    "gpt2-124m": dict(n_layer=12, n_head=12, n_embd=768, block_size=1024),
    # GPT-2 medium shapes (350M)
    "gpt2-350m": dict(n_layer=24, n_head=16, n_embd=1024, block_size=1024),
    # the RefinedWeb paper's 1B ablation scale (Falcon-1B-like: 24 layers, d=2048, 2048 context)
    "1b": dict(n_layer=24, n_head=16, n_embd=2048, block_size=2048),
}


def config_from_preset(preset: str, vocab_size: int, **overrides) -> GPTConfig:
    """GPTConfig for a named preset, a vocabulary size and optional field overrides."""
    if preset not in PRESETS:
        raise UserValueError(f"unknown model preset {preset!r}; choose one of {sorted(PRESETS)}")
    values = dict(PRESETS[preset])
    values.update({k: v for k, v in overrides.items() if v is not None})
    values["vocab_size"] = vocab_size
    return GPTConfig.from_dict(values)


class RMSNorm(nn.Module):
    """Root-mean-square norm, computed in float32 and cast back (as Llama does)."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * xf.to(dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """(x1, x2) -> (-x2, x1) on the two halves of the last dimension (Llama's convention)."""
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def rotary_tables(head_dim: int, length: int, theta: float, device=None) -> Tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables of shape (length, head_dim), float32, frequencies repeated over both halves."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64, device=device).float() / head_dim))
    positions = torch.arange(length, dtype=torch.int64, device=device).float()
    freqs = torch.outer(positions, inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()


class KVCache:
    """Keys and values of every layer for incremental decoding.

    ``k`` and ``v`` have shape (n_layer, batch, n_kv_head, max_len, head_dim). ``length`` is the number
    of positions filled so far (set by ``GPT.forward``); callers pass ``start_pos`` explicitly, so a
    cache can be rewound by passing an earlier ``start_pos``.
    """

    def __init__(self, n_layer: int, batch_size: int, n_kv_head: int, max_len: int, head_dim: int,
                 device=None, dtype=torch.float32):
        shape = (n_layer, batch_size, n_kv_head, max_len, head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.max_len = max_len
        self.batch_size = batch_size
        self.length = 0

    def update(self, layer: int, start_pos: int, k: torch.Tensor, v: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Store k, v (batch, heads, T, head_dim) at start_pos; return all keys/values up to start_pos+T."""
        end = start_pos + k.shape[2]
        if end > self.max_len:
            raise ValueError(f"KV cache overflow: positions up to {end} but the cache holds {self.max_len}")
        if k.shape[0] != self.batch_size:
            raise ValueError(f"KV cache built for batch {self.batch_size}, got batch {k.shape[0]}")
        self.k[layer, :, :, start_pos:end] = k.to(self.k.dtype)
        self.v[layer, :, :, start_pos:end] = v.to(self.v.dtype)
        return self.k[layer, :, :, :end].to(k.dtype), self.v[layer, :, :, :end].to(v.dtype)


class Attention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.n_head = config.n_head
        self.n_kv_head = config.kv_heads
        self.head_dim = config.head_dim
        d = config.n_embd
        self.q_proj = nn.Linear(d, self.n_head * self.head_dim, bias=False)
        self.k_proj = nn.Linear(d, self.n_kv_head * self.head_dim, bias=False)
        self.v_proj = nn.Linear(d, self.n_kv_head * self.head_dim, bias=False)
        self.o_proj = nn.Linear(self.n_head * self.head_dim, d, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, layer: int,
                kv_cache: Optional[KVCache], start_pos: int, bidirectional: bool = False,
                key_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.n_head, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)
        cos = cos.to(q.dtype)
        sin = sin.to(q.dtype)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        mask = None
        is_causal = not bidirectional
        if key_mask is not None:  # (B, T) True on real tokens: padding keys are never attended to
            mask = key_mask[:, None, None, :]
            if is_causal:
                mask = mask & torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
            is_causal = False
        if kv_cache is not None:
            k, v = kv_cache.update(layer, start_pos, k, v)
            is_causal = False
            if T > 1:  # prefill: query i (absolute position start_pos+i) sees keys 0..start_pos+i
                mask = torch.ones(T, start_pos + T, dtype=torch.bool, device=x.device).tril(diagonal=start_pos)
        if self.n_kv_head != self.n_head:
            rep = self.n_head // self.n_kv_head
            k = k.repeat_interleave(rep, dim=1)
            v = v.repeat_interleave(rep, dim=1)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal)
        y = y.transpose(1, 2).contiguous().view(B, T, self.n_head * self.head_dim)
        return self.o_proj(y)


class MLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x))."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        h = config.hidden_dim
        self.gate_proj = nn.Linear(config.n_embd, h, bias=False)
        self.up_proj = nn.Linear(config.n_embd, h, bias=False)
        self.down_proj = nn.Linear(h, config.n_embd, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.attn_norm = RMSNorm(config.n_embd, config.norm_eps)
        self.attn = Attention(config)
        self.mlp_norm = RMSNorm(config.n_embd, config.norm_eps)
        self.mlp = MLP(config)

    def forward(self, x, cos, sin, layer, kv_cache, start_pos, bidirectional=False, key_mask=None):
        x = x + self.attn(self.attn_norm(x), cos, sin, layer, kv_cache, start_pos, bidirectional, key_mask)
        return x + self.mlp(self.mlp_norm(x))


class GPT(nn.Module):
    """The language model: token ids (B, T) -> logits (B, T, vocab) and optional mean cross-entropy."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.n_embd)
        self.blocks = nn.ModuleList([Block(config) for _ in range(config.n_layer)])
        self.norm = RMSNorm(config.n_embd, config.norm_eps)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.tok_emb.weight
        cos, sin = rotary_tables(config.head_dim, config.block_size, config.rope_theta)
        # not persistent: derived from the config, never stored in checkpoints
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Normal(0, 0.02) everywhere, residual projections scaled by 1/sqrt(2 * n_layer), norms = 1."""
        residual_std = 0.02 / math.sqrt(2 * self.config.n_layer)
        for name, module in self.named_modules():
            if isinstance(module, nn.Linear):
                std = residual_std if name.endswith(("o_proj", "down_proj")) else 0.02
                nn.init.normal_(module.weight, mean=0.0, std=std)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, mean=0.0, std=0.02)
            elif isinstance(module, RMSNorm):
                nn.init.ones_(module.weight)

    def _rotary(self, start_pos: int, T: int) -> Tuple[torch.Tensor, torch.Tensor]:
        end = start_pos + T
        if end > self.rope_cos.shape[0]:
            # beyond the trained context (generation only): extend the tables, same formula
            cos, sin = rotary_tables(self.config.head_dim, max(end, 2 * self.rope_cos.shape[0]),
                                     self.config.rope_theta, device=self.rope_cos.device)
            self.rope_cos, self.rope_sin = cos.to(self.rope_cos.dtype), sin.to(self.rope_sin.dtype)
        return self.rope_cos[start_pos:end], self.rope_sin[start_pos:end]

    def forward(self, idx: torch.Tensor, targets: Optional[torch.Tensor] = None,
                kv_cache: Optional[KVCache] = None, start_pos: int = 0):
        """Logits (B, T, vocab) in float32 and the mean cross-entropy over targets != -100 (or None).

        With ``kv_cache``, ``idx`` holds the tokens at absolute positions start_pos..start_pos+T-1;
        their keys/values are stored in the cache and attention covers every cached position before
        them (causal within ``idx``), so a prefill of T > 1 tokens and one-token steps both work.
        """
        B, T = idx.shape
        x = self.hidden_states(idx, kv_cache=kv_cache, start_pos=start_pos)
        logits = self.lm_head(x).float()
        if kv_cache is not None:
            kv_cache.length = start_pos + T
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=IGNORE_INDEX)
        return logits, loss

    def hidden_states(self, idx: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
                      kv_cache: Optional[KVCache] = None, start_pos: int = 0) -> torch.Tensor:
        """The final (normed) hidden states (B, T, n_embd) that ``lm_head`` reads; task heads read them too.

        ``attention_mask`` (B, T), true on real tokens, keeps padding keys out of attention (needed
        for right-padded batches in the bidirectional model; the causal model's real tokens never
        see later padding anyway). Attention is causal unless ``config.bidirectional``.
        """
        if kv_cache is None and start_pos != 0:
            raise ValueError("start_pos is only meaningful with a kv_cache")
        if self.config.bidirectional and kv_cache is not None:
            raise UserValueError("a bidirectional (masked-LM) model has no KV-cache decoding: it does not generate")
        if attention_mask is not None and kv_cache is not None:
            raise ValueError("attention_mask is for full-sequence passes, not KV-cache decoding")
        T = idx.shape[1]
        cos, sin = self._rotary(start_pos, T)
        key_mask = None if attention_mask is None else attention_mask.to(torch.bool)
        x = self.tok_emb(idx)
        for i, block in enumerate(self.blocks):
            x = block(x, cos, sin, i, kv_cache, start_pos, self.config.bidirectional, key_mask)
        return self.norm(x)

    def num_params(self, non_embedding: bool = True) -> int:
        """Number of parameters (tied weights counted once); without the token embedding table when
        ``non_embedding`` (an untied ``lm_head`` is still counted: it is a matmul, not a lookup)."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.tok_emb.weight.numel()
        return n

    def make_kv_cache(self, batch_size: int, max_len: int, device=None, dtype=None) -> KVCache:
        """An empty KV cache for ``batch_size`` sequences of up to ``max_len`` positions."""
        p = self.tok_emb.weight
        c = self.config
        return KVCache(c.n_layer, batch_size, c.kv_heads, max_len, c.head_dim,
                       device=device if device is not None else p.device,
                       dtype=dtype if dtype is not None else p.dtype)
