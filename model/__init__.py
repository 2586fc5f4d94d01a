"""The PyTorch wing: a Llama-style GPT (gpt.py), a memory-mapped token-shard loader (data.py), the
training loop (train.py), safetensors checkpoints (checkpoint.py), FLOP/MFU accounting (flops.py),
and evaluation/generation/export built on them. It reads token shards (Arrow files) and never
imports the ``pipeline`` package."""
