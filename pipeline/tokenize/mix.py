"""``refinery mix``: several token sets (each from ``refinery tokenize``), weighted, as one mixture manifest.

    refinery mix --source web=runs/web/tokens --source wiki=runs/wiki/tokens --source books=runs/books/tokens \\
                 --epochs web=1 wiki=3 books=2 --output runs/mix.json [--dry-run]
    refinery mix --source ... --shares web=0.8 wiki=0.1 books=0.1 --budget 2e8 --output runs/mix.json

No data is copied: the manifest (``model/corridor/mixture.py``) names each source folder with its tokens,
documents, epochs, share of the mixture and the sha256 of its token manifest, and the trainer reads it
with ``refinery pretrain --tokens runs/mix.json``. ``--dry-run`` prints the table (the Pile paper's Table 1)
and writes nothing. Every source's shard checksums are verified (a full read of the data; ``--no-verify``
skips it). No Beam: this is bookkeeping over manifests.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Dict

from model.corridor import FormatError
from model.corridor.mixture import (format_table, parse_assignments, parse_weights, plan_mixture, source_facts,
                              write_mixture)
from model.corridor.token_shards import verify_token_set
from pipeline.tokenize import UsageError


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--source", action="append", default=[], metavar="NAME=DIR", required=True,
                        help="a token set (output of `refinery tokenize`) and its name; repeatable")
    weights = parser.add_mutually_exclusive_group(required=True)
    weights.add_argument("--epochs", nargs="+", metavar="NAME=E",
                         help="times each source is read per pass of the mixture (the Pile's way: wiki=3 web=1)")
    weights.add_argument("--shares", nargs="+", metavar="NAME=S",
                         help="share of the mixture's tokens per source (sum 1), with --budget")
    parser.add_argument("--budget", type=float, default=None, metavar="TOKENS",
                        help="total training tokens of one pass (needed with --shares; with --epochs it scales every "
                             "source down alike and may not exceed what the epochs give)")
    parser.add_argument("--max-epochs", type=float, default=None, metavar="E",
                        help="with --shares: refuse a plan that reads any source more than E times")
    parser.add_argument("--output", default=None, metavar="FILE.json|DIR", help="where the mixture manifest goes")
    parser.add_argument("--dry-run", action="store_true", help="print the table, write nothing")
    parser.add_argument("--no-verify", action="store_true", help="do not check every shard's sha256")
    return parser


def plan_from_args(args: argparse.Namespace) -> Dict[str, object]:
    """The mixture manifest ``args`` ask for (UsageError naming the source when something is wrong)."""
    try:
        folders = parse_assignments(args.source, "--source")
        sources = [source_facts(name, folder) for name, folder in folders.items()]
        if not getattr(args, "no_verify", False):
            for name, folder in folders.items():
                _, problems = verify_token_set(folder)
                if problems:
                    raise FormatError(f"source {name!r}: {problems[0]}")
        budget = None if args.budget is None else int(args.budget)
        if args.budget is not None and budget != args.budget:
            raise FormatError(f"--budget {args.budget} is not a whole number of tokens")
        out = Path(args.output) if args.output else None
        relative_to = None if out is None else (out.parent if out.suffix == ".json" else out)
        return plan_mixture(sources, epochs=parse_weights(args.epochs, "--epochs") if args.epochs else None,
                            shares=parse_weights(args.shares, "--shares") if args.shares else None,
                            budget=budget, max_epochs=args.max_epochs, relative_to=relative_to)
    except FormatError as e:
        raise UsageError(str(e)) from e


def run(args: argparse.Namespace) -> Dict[str, object]:
    """Plan the mixture, print its table, and write the manifest (unless --dry-run); returns the manifest."""
    manifest = plan_from_args(args)
    print(format_table(manifest))
    if not args.dry_run:
        if not args.output:
            raise UsageError("--output is required (or pass --dry-run)")
        path = write_mixture(args.output, manifest)
        print(f"mixture: {path}  (train with: refinery pretrain --tokens {path} ...)")
    return manifest
