"""Export a fine-tuned classifier as a Hugging Face ``LlamaForSequenceClassification`` or
``LlamaForTokenClassification`` folder (causal models only: Llama attention is causal).

The body's weights go under Llama names exactly as model/export.py writes them for the base model
(no ``lm_head``: a classification model has none), the head becomes ``score.weight`` (plus
``score.bias`` for token classification, Llama's ``token_classification_bias``); LoRA adapters are
merged into their Linear layers first (``W + alpha/r * B A``). ``config.json`` adds ``num_labels``,
``id2label`` / ``label2id`` and ``pad_token_id``: transformers pools sentence logits at the rightmost
token that is not ``pad_token_id``, the same position as our ``last`` pooling of right-padded
batches (the pad id, the end-of-text token, never occurs inside an encoded sentence). Only ``last``
pooling exports; ``mean``/``first`` have no transformers counterpart. The folder loads offline with
``AutoModelFor{Sequence,Token}Classification.from_pretrained(DIR)`` and gives our logits (tested).
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import torch

from model.corridor.files import atomic_dir
from model.errors import UserValueError
from model.export import llama_config_dict, llama_state_dict, tokenizer_files
from model.finetune.lora import merge_lora
from model.finetune.train import load_finetuned


def export_classifier(run_dir, out_dir, dtype: str = "float32", eos_token: str = "<|endoftext|>") -> Path:
    """Write the Hugging Face folder for a fine-tuning run's best model; returns ``out_dir``."""
    from safetensors.torch import save_file

    dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if dtype not in dtypes:
        raise UserValueError(f"dtype must be one of {sorted(dtypes)}, got {dtype!r}")
    model, meta = load_finetuned(run_dir)
    model = copy.deepcopy(model)
    body = model.body
    if body.config.bidirectional:
        raise UserValueError("this model was pretrained with --objective mlm (bidirectional attention): "
                             "Llama classification models are causal, so it has no transformers export")
    if meta["kind"] == "sequence" and meta["pooling"] != "last":
        raise UserValueError(f"pooling {meta['pooling']!r} has no transformers counterpart: only 'last' exports")
    merge_lora(body)
    weights = {k: v for k, v in llama_state_dict(body, dtypes[dtype]).items() if k != "lm_head.weight"}
    weights["score.weight"] = model.head.weight.detach().to("cpu", dtypes[dtype]).clone().contiguous()
    if model.head.bias is not None:
        weights["score.bias"] = model.head.bias.detach().to("cpu", dtypes[dtype]).clone().contiguous()
    tok_json = Path(meta["tokenizer"])
    tok_files = tokenizer_files(tok_json, eos_token, body.config.block_size)
    eos_id = tok_files.pop("_eos_id")
    config = llama_config_dict(body.config, eos_id, eos_id, dtype)
    sequence = meta["kind"] == "sequence"
    config.update({
        "architectures": ["LlamaForSequenceClassification" if sequence else "LlamaForTokenClassification"],
        "num_labels": len(meta["labels"]),
        "id2label": {str(i): l for i, l in enumerate(meta["labels"])},
        "label2id": {l: i for i, l in enumerate(meta["labels"])},
        "pad_token_id": int(meta["pad_id"]),
        "tie_word_embeddings": False,  # no lm_head to tie
        "classifier_dropout": 0.0 if sequence else meta["dropout"],
        "token_classification_bias": not sequence,
        "problem_type": "single_label_classification",
    })
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:  # every file gets the umask's mode, then the folder replaces out_dir
        save_file(weights, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        for name, obj in {"config.json": config, **tok_files}.items():
            (tmp / name).write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        shutil.copyfile(tok_json, tmp / "tokenizer.json")
    return out_dir
