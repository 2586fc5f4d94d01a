"""Evaluation of trained models: bits per byte on held-out text or token shards, and zero-shot tasks
(HellaSwag, ARC-Easy/Challenge, PIQA, LAMBADA) scored the way lm-evaluation-harness scores them.

- ``tasks.py``: loaders that turn the local eval files into harness-formatted items;
- ``scoring.py``: batched log-likelihood of continuations, ``acc`` / ``acc_norm``;
- ``bpb.py``: sliding-window NLL, bits per byte and perplexity;
- ``cli.py``: ``evaluate(model, tokenizer, tasks, ...)`` for Python use and the argument parsers and
  runners behind ``refinery eval``, ``refinery generate`` and ``refinery export``.

``from model.evaluate import evaluate`` is the short way in.
"""

from __future__ import annotations

__all__ = ["evaluate"]


def __getattr__(name: str):
    if name == "evaluate":
        from model.evaluate.cli import evaluate

        return evaluate
    raise AttributeError(f"module 'model.evaluate' has no attribute {name!r}")
