"""Front doors for evaluation, generation and export: ``evaluate()`` for Python, and the argument
parsers and runners behind ``refinery eval``, ``refinery generate`` and ``refinery export``.

The ``refinery`` command (pipeline/cli.py) adds a sub-command per pair::

    add_eval_arguments(parser)      ->  run_eval(args) -> results dict
    add_generate_arguments(parser)  ->  run_generate(args) -> list of Generation
    add_export_arguments(parser)    ->  run_export(args) -> output folder

The same sub-commands also run without it: ``python -m model.evaluate.cli eval --checkpoint run/``.

Results of ``eval`` are ``{task: {metric: value, ..., "n": items, "split": ...}}`` (``bpb`` is the
bits-per-byte "task"), written as JSON to ``eval.json`` inside the evaluated checkpoint's step folder
(or to ``--output``) and printed as a table. Every result names its split: by default the one
lm-evaluation-harness reports (ARC: test; ``--split validation`` scores the tasks that have one on it);
bits per byte says ``test`` for WikiText-2 raw test, ``validation`` for a run's held-out token shards and
``custom`` for a ``--text`` file of your own. Multiple-choice and LAMBADA results count ``windowed``
items (a continuation longer than the model's context, scored in windows: the harness refuses those).
``--log-samples DIR`` writes ``DIR/samples_<task>.jsonl``, one line per item (per document for bits
per byte), from which the aggregate metrics recompute exactly; field names are in the README.

Where the eval sets come from: ``--data-dir`` (a folder, or an ``http(s)://`` base URL that serves
the same file names, used only with ``--download``), else ``$WEBREFINERY_EVAL_DIR``, else
``../shared/data/eval`` beside the repository. Nothing is downloaded unless asked.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Sequence

from model.errors import UserValueError
from model.evaluate.tasks import DEFAULT_BPB_SPLIT, DEFAULT_BPB_TEXT, SPLITS, TASKS, local_task_dir

# torch and the scorers are imported inside the functions that use them, so that the `refinery`
# command can add these sub-commands' arguments without importing torch (an optional extra).

DEFAULT_TASKS = "bpb,hellaswag,arc_easy,arc_challenge,piqa,lambada"
KNOWN_TASKS = ("bpb",) + tuple(TASKS)


def parse_task_list(text: str | Sequence[str]) -> list[str]:
    """``"bpb,hellaswag"`` -> ``["bpb", "hellaswag"]``; unknown names are an error."""
    names = [t.strip() for t in (text.split(",") if isinstance(text, str) else text) if t and t.strip()]
    if not names:
        raise UserValueError("no tasks given")
    unknown = [t for t in names if t not in KNOWN_TASKS]
    if unknown:
        raise UserValueError(f"unknown task(s) {unknown}; known: {', '.join(KNOWN_TASKS)}")
    return list(dict.fromkeys(names))


def resolve_device(device: str | None) -> str:
    """``auto``/None -> ``cuda`` when available, else ``cpu``."""
    if device in (None, "auto"):
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def evaluate(model, tokenizer, tasks: str | Sequence[str] = DEFAULT_TASKS, data_dir=None, limit: int | None = None,
             *, batch_size: int = 32, device=None, dtype: str | None = None, text: str | Path | None = None,
             tokens: str | Path | None = None, bpb_params=None, allow_download: bool = False,
             split: str | None = None, samples_dir: str | Path | None = None, log=None) -> dict:
    """Run the named tasks; returns ``{task: {metric: value, ..., "n": items, "split": split}}``.

    ``bpb`` measures bits per byte on ``tokens`` (token shards, ``DIR/val/*.arrow``) and/or ``text``
    (a text file); with neither it uses WikiText-2 raw test from the data dir. With both, the token
    shards' result is ``bpb`` and the text's is ``bpb_text``. ``limit`` caps the items per task.
    ``bpb_params`` is a ``model.evaluate.bpb.BPBParams`` (window, stride, token cap). ``split``
    (``test``/``validation``) is used by every task that has it, the others keep their default split.
    ``samples_dir`` writes one ``samples_<task>.jsonl`` per result there (see ``write_samples``).
    """
    from model.evaluate.scoring import as_text_tokenizer

    names = parse_task_list(tasks)
    if getattr(getattr(model, "config", None), "bidirectional", False):
        from model.mlm import refuse_causal_tasks

        refuse_causal_tasks(names)  # every task here scores next tokens; see model.mlm.evaluate_mlm
    if split is not None and split not in SPLITS:
        raise UserValueError(f"unknown split {split!r}; known: {', '.join(SPLITS)}")
    tok = as_text_tokenizer(tokenizer)
    log = log or (lambda msg: None)
    details = samples_dir is not None
    results: dict[str, dict] = {}
    folder = None
    needs_folder = [t for t in names if t != "bpb"] + (["bpb"] if "bpb" in names and not (text or tokens) else [])
    if needs_folder:
        folder = local_task_dir(data_dir, needs_folder, allow_download=allow_download, split=split)
    for name in names:
        start = time.perf_counter()
        if name == "bpb":
            results.update(_bits_per_byte(model, tok, folder, text, tokens, bpb_params, batch_size, dtype, device,
                                          details))
        else:
            spec = TASKS[name]
            task_split = spec.split_for(split)
            if split is not None and task_split != split:
                log(f"{name}: has no {split} split, scored on {task_split}")
            results[name] = _zero_shot(model, tok, name, folder, task_split, limit, batch_size, dtype, device,
                                       details)
        log(f"{name}: done in {time.perf_counter() - start:.1f}s")
    if samples_dir is not None:
        for path in write_samples(results, samples_dir):
            log(f"samples: {path}")
    return results


def _zero_shot(model, tok, name: str, folder, split: str, limit, batch_size, dtype, device, details) -> dict:
    """One zero-shot task on one split: its metrics, ``split`` and (with ``details``) its item records."""
    from model.evaluate.scoring import evaluate_continuations, evaluate_multiple_choice

    spec = TASKS[name]
    items = spec.splits[split].loader(folder)
    if limit is not None:
        if limit < 1:
            raise UserValueError(f"limit must be >= 1, got {limit}")
        items = items[:limit]
    scorer = evaluate_multiple_choice if spec.kind == "multiple_choice" else evaluate_continuations
    result = scorer(model, tok, items, batch_size=batch_size, device=device, dtype=dtype, return_details=details)
    result["split"] = split
    return result


def _bits_per_byte(model, tok, folder, text, tokens, bpb_params, batch_size, dtype, device, details) -> dict:
    """``bpb`` (and ``bpb_text`` when both token shards and a text are given), each naming its split."""
    from model.evaluate.bpb import BPBParams, evaluate_text_file, evaluate_token_shards

    params = bpb_params or BPBParams(batch_size=max(1, batch_size // 4), dtype=dtype)
    out = {}
    if tokens is not None:
        out["bpb"] = evaluate_token_shards(model, tok, tokens, params, device, return_details=details)
        out["bpb"]["split"] = "validation"  # the run's held-out token shards (DIR/val)
    if text is not None or tokens is None:
        source = Path(text) if text is not None else Path(folder) / DEFAULT_BPB_TEXT
        key = "bpb_text" if tokens is not None else "bpb"
        out[key] = evaluate_text_file(model, tok, source, params, device, return_details=details)
        out[key]["split"] = DEFAULT_BPB_SPLIT if source.name == DEFAULT_BPB_TEXT else "custom"
    return out


def write_samples(results: dict, samples_dir: str | Path) -> list[Path]:
    """Move each result's ``details`` into ``samples_dir/samples_<task>.jsonl`` (one JSON object per line,
    each with ``task`` and ``split`` first); returns the files written. Results without details are skipped."""
    folder = Path(samples_dir)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for task, metrics in results.items():
        records = metrics.pop("details", None)
        if records is None:
            continue
        path = folder / f"samples_{task}.jsonl"
        tmp = path.with_name(path.name + ".tmp")
        with tmp.open("w", encoding="utf-8") as handle:
            for record in records:
                handle.write(json.dumps({"task": task, "split": metrics.get("split"), **record},
                                        ensure_ascii=False) + "\n")
        tmp.replace(path)
        written.append(path)
    return written


def format_results_table(results: dict) -> str:
    """A plain-text table: one row per task and metric (stderr columns folded in as ±), with the split each
    task was scored on and its count of ``windowed`` items."""
    rows = [("task", "split", "metric", "value", "n", "windowed")]
    for task, metrics in results.items():
        for metric, value in metrics.items():
            if metric in ("n", "source", "split", "windowed", "details") or metric.endswith("_stderr"):
                continue
            if isinstance(value, float):
                shown = f"{value:.4f}" if math.isfinite(value) else str(value)
                err = metrics.get(f"{metric}_stderr")
                if isinstance(err, float) and math.isfinite(err):
                    shown += f" ± {err:.4f}"
            else:
                shown = str(value)
            rows.append((task, str(metrics.get("split", "")), metric, shown, str(metrics.get("n", "")),
                         str(metrics.get("windowed", ""))))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for k, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(widths[i]) if i < 3 else cell.rjust(widths[i]) for i, cell in enumerate(row)))
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _load(checkpoint, device: str, tokenizer_override: str | None):
    from model.checkpoint import load_model_for_inference, resolve_checkpoint

    model, config, tokenizer_json = load_model_for_inference(checkpoint, device=device)
    tokenizer_json = tokenizer_override or tokenizer_json
    if tokenizer_json is None:
        raise FileNotFoundError(f"{checkpoint} has no tokenizer.json: pass --tokenizer PATH")
    return model, config, tokenizer_json, resolve_checkpoint(checkpoint)


# ----------------------------------------------------------------------------- eval


def add_eval_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Arguments of ``refinery eval``."""
    parser.add_argument("--checkpoint", required=True, help="run directory (latest step) or a step directory")
    parser.add_argument("--tasks", default=DEFAULT_TASKS, help=f"comma-separated: {', '.join(KNOWN_TASKS)}")
    parser.add_argument("--data-dir", default=None,
                        help="eval sets folder (default $WEBREFINERY_EVAL_DIR, else ../shared/data/eval); "
                             "an http(s):// base URL is fetched only with --download")
    parser.add_argument("--download", action="store_true", help="allow fetching eval files from a URL --data-dir")
    parser.add_argument("--limit", type=int, default=None, help="at most N items per task")
    parser.add_argument("--split", default=None, choices=list(SPLITS),
                        help="score every task that has this split on it (default: the split lm-evaluation-harness "
                             "reports: ARC test, HellaSwag/PIQA validation, LAMBADA test)")
    parser.add_argument("--log-samples", default=None, metavar="DIR",
                        help="write DIR/samples_<task>.jsonl: one line per item (per document for bpb)")
    parser.add_argument("--text", default=None, help="text file for bits per byte (default WikiText-2 raw test)")
    parser.add_argument("--tokens", default=None, help="token shard folder for bits per byte (DIR/val/*.arrow)")
    parser.add_argument("--max-tokens", type=int, default=None, help="bits per byte over at most N tokens")
    parser.add_argument("--stride", type=int, default=None,
                        help="sliding-window stride for bits per byte (default: the context length)")
    parser.add_argument("--batch-size", type=int, default=32, help="sequences per forward pass")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    parser.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"],
                        help="autocast dtype (default float32)")
    parser.add_argument("--tokenizer", default=None, help="tokenizer.json (default: the run's own)")
    parser.add_argument("--output", default=None, help="results JSON (default: eval.json in the checkpoint folder)")
    return parser


def run_eval(args: argparse.Namespace) -> dict:
    """``refinery eval``: load, evaluate, write JSON, print the table; returns the results."""
    from model.evaluate.bpb import BPBParams

    device = resolve_device(args.device)
    model, _config, tokenizer_json, step_dir = _load(args.checkpoint, device, args.tokenizer)
    if getattr(_config, "bidirectional", False):  # a masked-LM checkpoint: masked-token scores only (model/mlm.py)
        from model.mlm import run_mlm_eval

        results = run_mlm_eval(args, model, _config, tokenizer_json, step_dir)
    else:
        bpb_params = BPBParams(stride=args.stride, batch_size=max(1, args.batch_size // 4), max_tokens=args.max_tokens,
                               dtype=args.dtype)
        results = evaluate(model, tokenizer_json, args.tasks, args.data_dir, args.limit, batch_size=args.batch_size,
                           device=device, dtype=args.dtype, text=args.text, tokens=args.tokens, bpb_params=bpb_params,
                           allow_download=args.download, split=args.split, samples_dir=args.log_samples,
                           log=lambda m: print(m, file=sys.stderr, flush=True))
    output = Path(args.output) if args.output else Path(step_dir) / "eval.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    print(f"checkpoint: {step_dir}")
    print(format_results_table(results))
    print(f"results: {output}")
    return results


# ----------------------------------------------------------------------------- generate


def add_generate_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Arguments of ``refinery generate``."""
    parser.add_argument("--checkpoint", required=True, help="run directory (latest step) or a step directory")
    parser.add_argument("--prompt", action="append", default=None, help="a prompt (repeat for a batch)")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--seed", type=int, default=None, help="seed for sampling (same seed, same text)")
    parser.add_argument("--temperature", type=float, default=1.0, help="0 = greedy")
    parser.add_argument("--top-k", type=int, default=None)
    parser.add_argument("--top-p", type=float, default=None)
    parser.add_argument("--beams", type=int, default=1, help="beam search with N beams (N > 1)")
    parser.add_argument("--length-penalty", type=float, default=1.0, help="beam score = logprob / length**p")
    parser.add_argument("--stop", action="append", default=None, help="stop string (repeatable)")
    parser.add_argument("--no-stop-at-eot", action="store_true", help="keep going past <|endoftext|>")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--tokenizer", default=None, help="tokenizer.json (default: the run's own)")
    parser.add_argument("--json", action="store_true", help="print results as JSON lines")
    return parser


def run_generate(args: argparse.Namespace):
    """``refinery generate``: print (and return) one Generation per prompt."""
    from model.generate import GenerationParams, generate

    if not args.prompt:
        raise UserValueError("give at least one --prompt")
    device = resolve_device(args.device)
    model, _config, tokenizer_json, _ = _load(args.checkpoint, device, args.tokenizer)
    params = GenerationParams(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                              top_p=args.top_p, num_beams=args.beams, length_penalty=args.length_penalty,
                              seed=args.seed, stop=tuple(args.stop or ()), stop_at_eot=not args.no_stop_at_eot)
    outputs = generate(model, tokenizer_json, args.prompt, params)
    for prompt, out in zip(args.prompt, outputs):
        if args.json:
            print(json.dumps({"prompt": prompt, "text": out.text, "finish_reason": out.finish_reason,
                              "tokens": len(out.token_ids)}, ensure_ascii=False))
        else:
            print(f"=== {prompt!r} ({out.finish_reason}, {len(out.token_ids)} tokens)")
            print(prompt + out.text)
    return outputs


# ----------------------------------------------------------------------------- export


def add_export_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Arguments of ``refinery export``."""
    parser.add_argument("--checkpoint", required=True, help="run directory (latest step) or a step directory")
    parser.add_argument("--out", required=True, help="output folder for the Hugging Face model")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--tokenizer", default=None, help="tokenizer.json (default: the run's own)")
    return parser


def run_export(args: argparse.Namespace) -> Path:
    """``refinery export``: write the Hugging Face folder; returns its path."""
    from model.export import ExportParams, export_hf

    out = export_hf(args.checkpoint, args.out, ExportParams(dtype=args.dtype, tokenizer=args.tokenizer))
    print(f"exported {args.checkpoint} -> {out} (LlamaForCausalLM, {args.dtype})")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m model.evaluate.cli {eval,generate,export} ...``"""
    parser = argparse.ArgumentParser(prog="python -m model.evaluate.cli", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    add_eval_arguments(sub.add_parser("eval", help="bits per byte and zero-shot tasks"))
    add_generate_arguments(sub.add_parser("generate", help="generate text"))
    add_export_arguments(sub.add_parser("export", help="export to Hugging Face format"))
    args = parser.parse_args(argv)
    {"eval": run_eval, "generate": run_generate, "export": run_export}[args.command](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
