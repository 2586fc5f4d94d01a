"""The ``refinery`` command: parse arguments, load config, call one function. Nothing else lives here.

    refinery run PIPELINE --input PATH... --output DIR [--limit N] [--set STAGE.KEY=VALUE] [Beam options]
    refinery pipelines                      list the pipelines of pipelines.yaml with their stages
    refinery train-tokenizer / tokenize     tokenizer and token shards (pipeline/tokenize)
    refinery mix                            several token sets, weighted, as one mixture (pipeline/tokenize/mix.py)
    refinery pretrain                       the bundled GPT trainer (model/train.py)
    refinery eval / generate / export       evaluation suite, sampling, Hugging Face export (model/)
    refinery ablate                         raw vs filtered vs refined: same model, same budget
    refinery report OUT/                    a static HTML page of a run's funnel and signals

Errors a user can fix (``UserError``: config typos, missing files, refused options) print one clear line and
exit 2 (REFINERY_TRACEBACK=1 shows the traceback); any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib
import logging
import os
import sys
from typing import Callable, List, Optional, Sequence

EXIT_USAGE = 2


class _Lazy:
    """A subcommand implemented elsewhere: ``module:add_fn`` adds arguments, ``module:run_fn`` runs."""

    def __init__(self, module: str, add: str, run: str):
        self.module, self.add, self.run = module, add, run

    def _mod(self):
        return importlib.import_module(self.module)

    def add_arguments(self, parser):
        getattr(self._mod(), self.add)(parser)

    def __call__(self, args):
        return getattr(self._mod(), self.run)(args)


def _add_run_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("pipeline", help="pipeline name from pipelines.yaml (see `refinery pipelines`)")
    p.add_argument("--input", "-i", nargs="+", action="extend", metavar="PATH", default=None,
                   help="input files, directories or globs: WARC/ARC/WET and JSONL (plain, .gz, .zst, .bz2, .xz), Parquet, Arrow; "
                        "gs://, s3://, https:// and Common Crawl *.paths.gz lists too. Default: stream the first "
                        "--limit records of a Common Crawl WARC over https. Repeatable; NAME=PATH names a source "
                        "(a source_name column and a funnel per source in the report)")
    p.add_argument("--output", "-o", required=True, metavar="DIR", help="output folder (documents/, rejected/, report.json, funnel.png)")
    p.add_argument("--config", "-c", default=None, metavar="FILE", help="pipelines file (default: the repository's pipelines.yaml)")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="read at most N records in all (in input order)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="STAGE.KEY=VALUE",
                   help="override one stage parameter for this run (validated like the file); repeatable")
    p.add_argument("--force", action="store_true", help="rerun even if OUTPUT holds a complete run with the same fingerprint")
    p.add_argument("--no-funnel", action="store_true", help="do not draw funnel.png")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="worker processes of the embedded runner (0: one per CPU; default 1). Shorthand for "
                        "--direct_num_workers N --direct_running_mode multi_processing; outputs are identical")
    p.epilog = ("Any other --flag is passed to Apache Beam: e.g. --runner DataflowRunner --project P --region R "
                "--temp_location gs://... for Dataflow. --direct_running_mode multi_threading is refused (it loses records).")


def workers_beam_args(workers: Optional[int], beam_args: Sequence[str]) -> List[str]:
    """Beam flags for ``--workers N`` (multi_processing on the embedded runner), checked against ``beam_args``."""
    from pipeline.runtime import workers_args

    return workers_args(workers, beam_args)


def _cmd_run(args, beam_args: Sequence[str], as_program: bool = False) -> int:
    """``refinery run``; ``as_program``: this run is the whole process (``main()`` read ``sys.argv``), so the
    garbage collector is tuned for it (``_quiet_gc_while_importing``, ``_no_gc_on_exit``)."""
    with _quiet_gc_while_importing(as_program):
        from pipeline.beam_import import import_beam_for_local_run

        # a local run on the embedded runner does not load Beam's cloud connectors (start-up: bench_startup.py)
        import_beam_for_local_run([*(args.input or []), args.output], beam_args)
        from pipeline.report import summary_text
        from pipeline.run import COMMON_CRAWL_DEFAULT, DEFAULT_REMOTE_LIMIT, run_pipeline

    beam_args = workers_beam_args(args.workers, beam_args)

    inputs = args.input
    limit = args.limit
    if not inputs:
        inputs = [COMMON_CRAWL_DEFAULT]
        limit = limit or DEFAULT_REMOTE_LIMIT
        print(f"No --input given: streaming the first {limit} records of Common Crawl ({COMMON_CRAWL_DEFAULT}).", file=sys.stderr)
    print(f"refinery: running pipeline '{args.pipeline}' into {args.output} (Beam; counts and funnel at the end)", file=sys.stderr)
    report = run_pipeline(args.pipeline, inputs, args.output, config=args.config, overrides=args.overrides,
                          limit=limit, beam_args=beam_args, force=args.force, draw=not args.no_funnel)
    if report.get("skipped"):
        print(f"{args.output} already holds this run (same pipeline, inputs and parameters): nothing to do. Use --force to rerun.")
    print(summary_text(report, args.output, report.get("seconds", 0.0)))
    _no_gc_on_exit(as_program)
    return 0


@contextlib.contextmanager
def _quiet_gc_while_importing(as_program: bool):
    """For a program run: no cyclic garbage collection while Beam and the stages are imported (~800 modules
    whose objects all live to the end: each collection would only walk them again), then those objects moved
    to the collector's permanent generation (``gc.freeze``) so the run's own collections skip them. The little
    cyclic garbage the imports leave stays until the process ends; the run's own garbage is collected as ever."""
    if not as_program or not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.enable()


def _no_gc_on_exit(as_program: bool) -> None:
    """For a program run whose outputs are all written: the interpreter's shutdown collections (~0.2 s CPU of
    walking every object once more) are skipped by moving everything to the permanent generation; atexit
    handlers, stream flushing and the objects' freeing by reference count run as usual."""
    if as_program:
        gc.freeze()


def _cmd_pipelines(args) -> int:
    from pipeline.config import get_pipeline, load_config

    config = load_config(args.config)
    for name in config["pipelines"]:
        spec = get_pipeline(name, args.config)
        print(f"{name}: {spec.description}")
        print("    " + " -> ".join(s.name for s in spec.stages))
    return 0


SUBCOMMANDS = {
    "train-tokenizer": ("train a byte-level BPE tokenizer on refined shards", _Lazy("pipeline.tokenize.cli", "add_train_arguments", "run_train")),
    "tokenize": ("write token shards from refined shards", _Lazy("pipeline.tokenize.cli", "add_tokenize_arguments", "run_tokenize")),
    "mix": ("weight several token sets into one mixture manifest (epochs or shares)", _Lazy("pipeline.tokenize.mix", "add_arguments", "run")),
    "pretrain": ("train a GPT-style model on token shards", _Lazy("model.train", "add_arguments", "run")),
    "finetune": ("fine-tune a checkpoint on SST-2, WNUT-17 or your labelled data (full or LoRA)", _Lazy("model.finetune.train", "add_arguments", "run")),
    "eval": ("bits-per-byte and zero-shot tasks for a checkpoint", _Lazy("model.evaluate.cli", "add_eval_arguments", "run_eval")),
    "generate": ("sample text from a checkpoint", _Lazy("model.evaluate.cli", "add_generate_arguments", "run_generate")),
    "export": ("export a checkpoint as a Hugging Face model folder", _Lazy("model.evaluate.cli", "add_export_arguments", "run_export")),
    "ablate": ("raw vs filtered vs refined: train and evaluate the same small model", _Lazy("pipeline.ablate", "add_arguments", "run")),
    "report": ("render a run's funnel and signals as a static HTML page", _Lazy("pipeline.html_report", "add_arguments", "run")),
    "train-classifier": ("train a fastText quality classifier (model.bin + model card)", _Lazy("pipeline.quality.train_cli", "add_arguments", "run")),
}


def build_parser(lazy: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="refinery",
        description="webrefinery: RefinedWeb-style refinement of web crawls on Apache Beam, plus tokenizer, trainer and evaluation.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="more logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p_run = sub.add_parser("run", help="run a refinement pipeline", description="Run a named pipeline from pipelines.yaml.")
    _add_run_arguments(p_run)
    p_list = sub.add_parser("pipelines", help="list pipelines and their stages")
    p_list.add_argument("--config", "-c", default=None, metavar="FILE")
    for name, (help_text, impl) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_impl=impl, _lazy_name=name)
    return parser


def _load_subparser(parser: argparse.ArgumentParser, argv: Sequence[str]) -> None:
    """Add the arguments of the chosen lazy subcommand only (so `refinery run` never imports torch)."""
    sub_action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for token in argv:
        if token in SUBCOMMANDS:
            SUBCOMMANDS[token][1].add_arguments(sub_action.choices[token])
            return
        if not token.startswith("-"):
            return


def _user_error_types():
    """The error boundary: the project's own ``UserError`` (both wings) and a missing file print one line;
    everything else is a bug and keeps its traceback."""
    from pipeline.errors import UserError

    types: List[type] = [UserError, FileNotFoundError]
    try:  # the model wing's own base (it never imports pipeline); importing it does not import torch
        from model.errors import UserError as ModelUserError

        types.append(ModelUserError)
    except ImportError:  # pragma: no cover - model wing not installed
        pass
    return tuple(types)


def _command_of(argv: Sequence[str]) -> Optional[str]:
    """The subcommand: the first argument that is not a global option (``refinery -v run ...``)."""
    return next((a for a in argv if not a.startswith("-")), None)


def main(argv: Optional[Sequence[str]] = None) -> int:
    as_program = argv is None  # the console script / python -m pipeline.cli: this call is the whole process
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = "-v" in argv or "--verbose" in argv
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:  # Beam warns about optional GCP clients on import
        handler.addFilter(lambda record: "apitools not found" not in str(record.msg))
    if not verbose:
        for noisy in ("apache_beam", "absl"):
            logging.getLogger(noisy).setLevel(logging.ERROR)
        # extraction libraries log every unparsable page; those pages are counted as extract:* rejections
        for noisy in ("trafilatura", "htmldate", "courlan", "justext"):
            logging.getLogger(noisy).setLevel(logging.CRITICAL)
    parser = build_parser()
    _load_subparser(parser, argv)
    if not argv:
        parser.print_help()
        return EXIT_USAGE
    if _command_of(argv) == "run":  # unknown --flags of `run` are Beam options, also after `-v`
        args, beam_args = parser.parse_known_args(argv)
    else:
        args, beam_args = parser.parse_args(argv), []
    try:
        if args.command == "run":
            return _cmd_run(args, beam_args, as_program=as_program)
        if args.command == "pipelines":
            return _cmd_pipelines(args)
        result = args._impl(args)
        return result if isinstance(result, int) else 0
    except _user_error_types() as exc:
        if os.environ.get("REFINERY_TRACEBACK"):
            raise
        print(f"refinery {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
