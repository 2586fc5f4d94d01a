"""Export a checkpoint to a Hugging Face ``LlamaForCausalLM`` folder (for transformers, lm-eval, serving).

``export_hf(checkpoint, out_dir)`` writes, into ``out_dir``:

- ``model.safetensors``: the weights under Llama parameter names (``model.embed_tokens.weight``,
  ``model.layers.{i}.self_attn.q_proj.weight``, ...; see ``llama_parameter_name``). ``model/gpt.py``
  already uses Llama's rotary convention (rotate_half), so no weight is permuted. With tied
  embeddings only ``model.embed_tokens.weight`` is stored, as transformers expects.
- ``config.json``: ``LlamaForCausalLM`` with hidden_size, intermediate_size, num_hidden_layers,
  num_attention_heads, num_key_value_heads, head_dim, rms_norm_eps, rope_theta (also as
  ``rope_parameters`` for transformers >= 5), tie_word_embeddings, max_position_embeddings,
  vocab_size, bos/eos ids (the end-of-text token) and torch_dtype.
- ``generation_config.json`` (bos/eos ids).
- the tokenizer: ``tokenizer.json`` (copied), ``tokenizer_config.json`` (PreTrainedTokenizerFast,
  eos/bos token, no BOS added, model_max_length) and ``special_tokens_map.json``.

``dtype`` (``refinery export --dtype``) is ``float32`` (default), ``bfloat16`` or ``float16``: every
tensor is stored in it and ``torch_dtype`` in ``config.json`` says so, so that
``from_pretrained(out_dir, dtype="auto")`` and serving stacks run the model in that precision without a
silent down-cast. ``LOGIT_TOLERANCE`` states how far the logits of such a folder, loaded in
transformers and run in its dtype, may be from our float32 model's: ``max |Δlogit| <= tol x max
|logit|`` (tests/model/test_export.py checks it; measured 1.2-2.2% for bfloat16, 0.16-0.33% for float16 and
0 for float32 on its 2-layer random models, 64 tokens, CPU: ``pytest -s tests/model/test_export.py -k
reduced_precision`` prints them).

The folder loads offline with ``AutoModelForCausalLM.from_pretrained(out_dir)`` and
``AutoTokenizer.from_pretrained(out_dir)``; transformers is not needed to export. Files are written
into a temporary sibling folder and moved into place at the end, so a failed export leaves nothing
half-written under ``out_dir``; every file gets the umask's mode (0644 under umask 022, also
``model.safetensors``, which safetensors alone creates 0600), so a server running as another user can read it.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from model.corridor.files import atomic_dir
from model.errors import UserValueError
from model.checkpoint import load_model_for_inference
from model.gpt import GPT, GPTConfig

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# max |logit of the export, run in its dtype - our float32 logit| / max |our float32 logit|
LOGIT_TOLERANCE = {"float32": 1e-5, "bfloat16": 0.04, "float16": 0.006}

_BLOCK_NAMES = {
    "attn_norm.weight": "input_layernorm.weight",
    "attn.q_proj.weight": "self_attn.q_proj.weight",
    "attn.k_proj.weight": "self_attn.k_proj.weight",
    "attn.v_proj.weight": "self_attn.v_proj.weight",
    "attn.o_proj.weight": "self_attn.o_proj.weight",
    "mlp_norm.weight": "post_attention_layernorm.weight",
    "mlp.gate_proj.weight": "mlp.gate_proj.weight",
    "mlp.up_proj.weight": "mlp.up_proj.weight",
    "mlp.down_proj.weight": "mlp.down_proj.weight",
}
_TOP_NAMES = {"tok_emb.weight": "model.embed_tokens.weight", "norm.weight": "model.norm.weight",
              "lm_head.weight": "lm_head.weight"}
_BLOCK_RE = re.compile(r"^blocks\.(\d+)\.(.+)$")


@dataclass
class ExportParams:
    """Export settings: weight dtype and an optional tokenizer.json (default: the run's own)."""

    dtype: str = "float32"
    tokenizer: str | None = None
    eos_token: str = "<|endoftext|>"


def llama_parameter_name(name: str) -> str:
    """Our parameter name (model/gpt.py) -> the ``LlamaForCausalLM`` name."""
    if name in _TOP_NAMES:
        return _TOP_NAMES[name]
    m = _BLOCK_RE.match(name)
    if m and m.group(2) in _BLOCK_NAMES:
        return f"model.layers.{m.group(1)}.{_BLOCK_NAMES[m.group(2)]}"
    raise ValueError(f"parameter {name!r} has no Llama counterpart: model/gpt.py and export.py disagree")


def llama_state_dict(model: GPT, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """The model's weights under Llama names, contiguous CPU tensors of ``dtype`` (no shared storage)."""
    tied = bool(model.config.tie_embeddings)
    out = {}
    for name, tensor in model.state_dict().items():
        if name.startswith("rope_"):
            continue
        if tied and name == "lm_head.weight":
            continue
        out[llama_parameter_name(name)] = tensor.detach().to("cpu", dtype=dtype).clone().contiguous()
    return out


def llama_config_dict(config: GPTConfig, bos_id: int | None, eos_id: int | None, dtype: str) -> dict:
    """``config.json`` contents for ``LlamaForCausalLM``."""
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": config.vocab_size,
        "hidden_size": config.n_embd,
        "intermediate_size": config.hidden_dim,
        "num_hidden_layers": config.n_layer,
        "num_attention_heads": config.n_head,
        "num_key_value_heads": config.kv_heads,
        "head_dim": config.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": config.block_size,
        "rms_norm_eps": config.norm_eps,
        "rope_theta": config.rope_theta,
        "rope_scaling": None,
        "rope_parameters": {"rope_type": "default", "rope_theta": config.rope_theta},
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "tie_word_embeddings": bool(config.tie_embeddings),
        "initializer_range": 0.02,
        "pretraining_tp": 1,
        "use_cache": True,
        "bos_token_id": bos_id,
        "eos_token_id": eos_id,
        "pad_token_id": None,
        "torch_dtype": dtype,
        "dtype": dtype,
    }


def tokenizer_files(tokenizer_json: Path, eos_token: str, model_max_length: int) -> dict[str, dict]:
    """``tokenizer_config.json`` and ``special_tokens_map.json`` for a ``tokenizer.json``."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_json))
    eos_id = tok.token_to_id(eos_token)
    if eos_id is None:
        raise UserValueError(f"{tokenizer_json} has no {eos_token!r} token to use as end of sequence")
    added = {
        str(tid): {"content": t.content, "lstrip": t.lstrip, "rstrip": t.rstrip, "normalized": t.normalized,
                   "single_word": t.single_word, "special": t.special}
        for tid, t in sorted(tok.get_added_tokens_decoder().items())
    }
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": eos_token,
        "eos_token": eos_token,
        "unk_token": eos_token,
        "add_bos_token": False,
        "add_eos_token": False,
        "add_prefix_space": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": model_max_length,
        "added_tokens_decoder": added,
    }
    special = {"bos_token": eos_token, "eos_token": eos_token, "unk_token": eos_token}
    return {"tokenizer_config.json": config, "special_tokens_map.json": special, "_eos_id": eos_id}


def export_model(model: GPT, tokenizer_json: str | Path, out_dir: str | Path,
                 params: ExportParams | None = None) -> Path:
    """Write the Hugging Face folder for an in-memory model and its tokenizer; returns ``out_dir``."""
    from safetensors.torch import save_file

    params = params or ExportParams()
    if params.dtype not in DTYPES:
        raise UserValueError(f"dtype must be one of {sorted(DTYPES)}, got {params.dtype!r}")
    tokenizer_json = Path(params.tokenizer or tokenizer_json) if (params.tokenizer or tokenizer_json) else None
    if tokenizer_json is None or not tokenizer_json.is_file():
        raise FileNotFoundError(f"tokenizer.json not found ({tokenizer_json}); pass --tokenizer PATH")
    config: GPTConfig = model.config
    if config.bidirectional:
        raise UserValueError("this checkpoint was pretrained with --objective mlm (bidirectional attention): "
                             "LlamaForCausalLM is causal, so it has no Hugging Face export")
    tok_files = tokenizer_files(tokenizer_json, params.eos_token, config.block_size)
    eos_id = tok_files.pop("_eos_id")
    from tokenizers import Tokenizer

    vocab = Tokenizer.from_file(str(tokenizer_json)).get_vocab_size(with_added_tokens=True)
    if vocab > config.vocab_size:
        raise UserValueError(f"the tokenizer has {vocab} tokens but the model only {config.vocab_size} embeddings")

    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with atomic_dir(out_dir) as tmp:  # moved into place when complete; files get the umask's mode (0644)
        weights = llama_state_dict(model, DTYPES[params.dtype])
        save_file(weights, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        files = {
            "config.json": llama_config_dict(config, eos_id, eos_id, params.dtype),
            "generation_config.json": {"bos_token_id": eos_id, "eos_token_id": eos_id,
                                       "_from_model_config": True},
            **tok_files,
        }
        for name, obj in files.items():
            (tmp / name).write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        shutil.copyfile(tokenizer_json, tmp / "tokenizer.json")
    return out_dir


def export_hf(checkpoint: str | Path, out_dir: str | Path, params: ExportParams | None = None) -> Path:
    """Export a checkpoint (run directory -> latest step, or a step directory) to ``out_dir``."""
    params = params or ExportParams()
    model, _config, tokenizer_json = load_model_for_inference(checkpoint, device="cpu")
    return export_model(model, params.tokenizer or tokenizer_json, out_dir, params)
