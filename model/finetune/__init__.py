"""Downstream fine-tuning of a pretrained checkpoint: sentence classification and token classification
(NER), full or LoRA, with early stopping on the dev metric, resumable checkpoints and Hugging Face export.

Modules: ``data`` (tasks: SST-2, WNUT-17, a user's JSONL / CoNLL files), ``metrics`` (accuracy, macro-F1,
entity-level P/R/F1), ``lora`` (low-rank adapters), ``heads`` (the classifier around the GPT body),
``train`` (the loop and ``refinery finetune``), ``export`` (``LlamaFor{Sequence,Token}Classification``).
"""
