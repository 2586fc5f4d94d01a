"""How many items of each zero-shot task a model of a given context length would score in windows.

An item is *windowed* when one of its continuations is longer (in tokens) than the model's context: the
harness refuses such a run, ``refinery eval`` scores it in several windows and counts it (``windowed``).
This needs only the tokenizer, no model::

    python -m model.evaluate.windowed --tokenizer tok/tokenizer.json --lengths 128,512,1024

``--tokenizer`` is a ``tokenizer.json`` or a GPT-2 folder (``encoder.json`` + ``vocab.bpe``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from model.evaluate.scoring import TextTokenizer, encode_requests
from model.evaluate.tasks import TASKS, ContinuationItem, load_task


def load_tokenizer(path: str | Path) -> TextTokenizer:
    """A ``tokenizer.json``, or a GPT-2 style folder with ``encoder.json`` and ``vocab.bpe``."""
    path = Path(path)
    if path.is_dir() and not (path / "tokenizer.json").exists():
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers

        inner = Tokenizer(models.BPE.from_file(str(path / "encoder.json"), str(path / "vocab.bpe")))
        inner.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        inner.decoder = decoders.ByteLevel()
        inner.add_special_tokens(["<|endoftext|>"])
        return TextTokenizer(inner)
    return TextTokenizer(path / "tokenizer.json" if path.is_dir() else path)


def longest_continuations(tokenizer: TextTokenizer, items: Sequence) -> list[int]:
    """Per item, the token count of its longest continuation (as the scorer tokenizes it)."""
    if items and isinstance(items[0], ContinuationItem):
        return [len(c) for _, c in encode_requests(tokenizer, [(it.context, it.continuation) for it in items])]
    requests = encode_requests(tokenizer, [(it.context, it.target_delimiter + c) for it in items for c in it.choices])
    out, k = [], 0
    for item in items:
        out.append(max(len(cont) for _, cont in requests[k:k + len(item.choices)]))
        k += len(item.choices)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model.evaluate.windowed", description=__doc__.split("\n")[0])
    parser.add_argument("--tokenizer", required=True)
    parser.add_argument("--lengths", default="128,512,1024", help="context lengths (comma-separated)")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--split", default=None)
    args = parser.parse_args(argv)
    tok = load_tokenizer(args.tokenizer)
    lengths = [int(x) for x in args.lengths.split(",")]
    print("task  split  items  longest  " + "  ".join(f"windowed@{n}" for n in lengths))
    for name, spec in TASKS.items():
        split = spec.split_for(args.split)
        longest = longest_continuations(tok, load_task(name, args.data_dir, split=split))
        counts = "  ".join(str(sum(x > n for x in longest)) for n in lengths)
        print(f"{name}  {split}  {len(longest)}  {max(longest)}  {counts}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
