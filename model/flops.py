"""FLOP accounting and model FLOPs utilisation (MFU) for the GPT in model/gpt.py.

Training FLOPs per token (forward + backward), the PaLM / nanoGPT convention:

    flops_per_token = 6 * N + 12 * n_layer * n_embd * T

* ``N`` = parameters that take part in matrix multiplications: every weight matrix of every block
  plus the output projection ``lm_head`` (counted even when it is tied to the embedding, because
  the output matmul costs FLOPs while the embedding lookup does not). The embedding lookup and the
  RMSNorm gains are left out. For the GPT-2 124M shape with a 50,257 vocabulary this N is about
  124M: tied, it equals the total parameter count minus the norm gains.
* ``12 * L * d * T`` is attention's score and weighted-sum matmuls (QK^T and AV: 2 matmuls x 2
  FLOPs per multiply-add x 3 for forward+backward, per layer, over ``T`` = the training sequence
  length), counted over the full T x T square, without halving for the causal mask.

MFU = achieved FLOP/s / (number of devices x peak dense bf16 FLOP/s of one device). Peaks come from
the device name (NVIDIA datasheets, dense, no sparsity); an unknown device (or the CPU) gives no MFU
unless the caller passes its peak explicitly.
"""

from __future__ import annotations

from typing import Optional

from model.gpt import GPTConfig

# Dense bf16 tensor-core peaks in FLOP/s, matched against torch.cuda.get_device_name() in this order.
PEAK_BF16_FLOPS: list[tuple[str, float]] = [
    ("H200", 989e12),
    ("GH200", 989e12),
    ("H100 PCIE", 756e12),
    ("H100 NVL", 835e12),
    ("H100", 989e12),  # SXM (and names without a form factor)
    ("H800", 989e12),
    ("B200", 2250e12),
    ("A100", 312e12),
    ("A800", 312e12),
    ("L40S", 362e12),
    ("L40", 181e12),
    ("L4", 121e12),
    ("A10G", 70e12),
    ("4090", 165e12),
]


def matmul_params(config: GPTConfig) -> int:
    """N of the FLOP formula: parameters of all matmul weights, including lm_head (see module doc)."""
    d, hd = config.n_embd, config.head_dim
    per_layer = (d * config.n_head * hd  # q
                 + 2 * d * config.kv_heads * hd  # k, v
                 + config.n_head * hd * d  # o
                 + 3 * d * config.hidden_dim)  # gate, up, down
    return config.n_layer * per_layer + config.vocab_size * d


def flops_per_token(config: GPTConfig, seq_len: Optional[int] = None) -> float:
    """Training FLOPs per token: 6 * N + 12 * n_layer * n_embd * T (T = seq_len or block_size)."""
    T = config.block_size if seq_len is None else seq_len
    return 6.0 * matmul_params(config) + 12.0 * config.n_layer * config.n_embd * T


def peak_flops_for_device(name: str) -> Optional[float]:
    """Dense bf16 peak FLOP/s of one GPU from its name (e.g. "NVIDIA H100 80GB HBM3"), or None."""
    upper = name.upper().replace("-", " ")
    for key, peak in PEAK_BF16_FLOPS:
        if key in upper:
            return peak
    return None


def mfu(tokens_per_s: float, flops_token: float, peak_per_device: Optional[float], n_devices: int = 1) -> Optional[float]:
    """Model FLOPs utilisation in [0, 1] (None when the peak is unknown)."""
    if not peak_per_device or tokens_per_s <= 0:
        return None
    return tokens_per_s * flops_token / (peak_per_device * n_devices)
