"""Command-line front for ``refinery train-tokenizer`` and ``refinery tokenize``.

The ``refinery`` command (pipeline/cli.py) adds these sub-commands with ``add_train_arguments`` /
``add_tokenize_arguments`` and calls ``run_train`` / ``run_tokenize`` with the parsed arguments. Bad input
raises ``pipeline.tokenize.UsageError`` (a ValueError) whose message is one line, meant to be printed
without a traceback. Extra Beam options go in ``args.beam_args`` (a list, e.g. the leftovers of
``parse_known_args``) or via repeated ``--beam-option=--direct_num_workers=2``.

Standalone use (same behaviour): ``python -m pipeline.tokenize.cli train-tokenizer --input ... --output ...``.
"""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional, Sequence

from pipeline.runtime import workers_args
from pipeline.tokenize import EOT_TOKEN, UsageError
from pipeline.tokenize.encode import TokenizeParams, count_documents, run_tokenize_pipeline
from pipeline.tokenize.train import TrainTokenizerParams, train_tokenizer

_TRAIN_DEFAULTS = TrainTokenizerParams()
_TOKENIZE_DEFAULTS = TokenizeParams()


def _add_beam_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workers", type=int, default=1,
                        help="in-process Beam workers (>1 uses direct_running_mode=multi_processing)")
    parser.add_argument("--beam-option", action="append", default=[], metavar="--KEY=VALUE",
                        help="extra Beam pipeline option, repeatable (e.g. --beam-option=--runner=DataflowRunner)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def beam_args_from(args: argparse.Namespace) -> List[str]:
    """Beam options from ``--workers``, ``--beam-option`` and ``args.beam_args``."""
    out: List[str] = []
    workers = getattr(args, "workers", 1) or 1
    if workers < 1:
        raise UsageError(f"--workers {workers} must be >= 1")
    out += workers_args(workers)  # the embedded runner's processes (pipeline.runtime)
    out += list(getattr(args, "beam_option", None) or [])
    out += list(getattr(args, "beam_args", None) or [])
    return out


def add_train_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Arguments of ``refinery train-tokenizer``."""
    d = _TRAIN_DEFAULTS
    parser.add_argument("--input", required=True, help="document shards: OUT/documents, a .arrow file or a glob")
    parser.add_argument("--output", required=True, help="folder for tokenizer.json and tokenizer_report.json")
    parser.add_argument("--vocab-size", type=int, default=d.vocab_size)
    parser.add_argument("--sample-bytes", type=int, default=d.sample_bytes,
                        help="training text budget in UTF-8 bytes (a seeded uniform sample of documents)")
    parser.add_argument("--max-doc-bytes", type=int, default=d.max_doc_bytes, help="cap on each document's text")
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--special-tokens", nargs="*", default=list(d.special_tokens),
                        help=f"extra special tokens (after {EOT_TOKEN}, which is always id 0)")
    parser.add_argument("--min-frequency", type=int, default=d.min_frequency)
    parser.add_argument("--heldout-bytes", type=int, default=d.heldout_bytes,
                        help="text held out of training to measure fertility (0: none)")
    parser.add_argument("--temp-dir", default=None, help="where the sample is spilled (default: system temp)")
    _add_beam_arguments(parser)
    return parser


def train_params_from(args: argparse.Namespace) -> TrainTokenizerParams:
    return TrainTokenizerParams(
        vocab_size=args.vocab_size,
        sample_bytes=args.sample_bytes,
        max_doc_bytes=args.max_doc_bytes,
        seed=args.seed,
        special_tokens=tuple(args.special_tokens or ()),
        min_frequency=args.min_frequency,
        heldout_bytes=args.heldout_bytes,
    )


def run_train(args: argparse.Namespace) -> dict:
    """Train the tokenizer as asked by ``args``; prints a one-line summary and returns the report."""
    report = train_tokenizer(args.input, args.output, train_params_from(args), beam_args=beam_args_from(args),
                             temp_dir=args.temp_dir, progress=not args.no_progress)
    held = report["heldout"]
    print(f"tokenizer: {args.output}/tokenizer.json  vocab {report['vocab_size']}  trained on "
          f"{report['trained_documents']} docs / {report['trained_bytes'] / 1e6:.1f} MB "
          f"(of {report['corpus_documents']} docs)  held-out tokens/byte {held['tokens_per_byte']}  "
          f"tokens/word {held['tokens_per_word']}  in {report['seconds']['total']:.1f}s")
    return report


def add_tokenize_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Arguments of ``refinery tokenize``."""
    d = _TOKENIZE_DEFAULTS
    parser.add_argument("--input", required=True, help="document shards: OUT/documents, a .arrow file or a glob")
    parser.add_argument("--tokenizer", required=True, help="tokenizer.json from train-tokenizer")
    parser.add_argument("--output", required=True, help="token shard folder (local)")
    parser.add_argument("--val-fraction", type=float, default=d.val_fraction)
    parser.add_argument("--num-shards", type=int, default=d.num_shards, help="train shards")
    parser.add_argument("--val-num-shards", type=int, default=d.val_num_shards, help="validation shards")
    parser.add_argument("--batch-size", type=int, default=d.batch_size, help="documents per encode_batch call")
    parser.add_argument("--eot-token", default=d.eot_token)
    _add_beam_arguments(parser)
    return parser


def tokenize_params_from(args: argparse.Namespace) -> TokenizeParams:
    return TokenizeParams(
        tokenizer=args.tokenizer,
        output=args.output,
        val_fraction=args.val_fraction,
        num_shards=args.num_shards,
        val_num_shards=args.val_num_shards,
        batch_size=args.batch_size,
        eot_token=args.eot_token,
    )


def run_tokenize(args: argparse.Namespace) -> dict:
    """Write token shards as asked by ``args``; prints a one-line summary and returns the manifest."""
    manifest = run_tokenize_pipeline(args.input, tokenize_params_from(args), beam_args=beam_args_from(args),
                                     progress=not args.no_progress)
    docs, tokens = count_documents(manifest)
    splits = manifest["splits"]
    print(f"token shards: {args.output}  {docs} docs  {tokens} tokens ({manifest['dtype']})  "
          f"train {splits['train']['tokens']} / val {splits['val']['tokens']} tokens  "
          f"in {manifest['seconds']:.1f}s")
    return manifest


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Standalone entry point (the project's own ``refinery`` command offers the same sub-commands)."""
    parser = argparse.ArgumentParser(prog="python -m pipeline.tokenize.cli")
    sub = parser.add_subparsers(dest="command", required=True)
    add_train_arguments(sub.add_parser("train-tokenizer", help="train a byte-level BPE on refined documents"))
    add_tokenize_arguments(sub.add_parser("tokenize", help="write token shards"))
    args, extra = parser.parse_known_args(argv)
    args.beam_args = extra
    try:
        if args.command == "train-tokenizer":
            run_train(args)
        else:
            run_tokenize(args)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
