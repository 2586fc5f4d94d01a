"""``refinery ablate``: the paper's RW-Raw -> RW-Filtered -> RefinedWeb comparison, at a scale you choose.

For each pipeline (default ``rw_raw``, ``rw_filtered``, ``refinedweb``) on the same inputs:
refine -> tokenize with ONE shared tokenizer (trained on the least-filtered output, the superset) -> train
the same model for the same number of tokens (same seed) -> evaluate on the same held-out clean text
(bits per byte on WikiText-2 by default, tokenizer-independent) and the same zero-shot tasks. Writes
``OUT/ablation.json``, ``OUT/ablation.png`` and prints a table.

This module is a front door (like the CLI): it is the one place besides ``cli.py`` where the pipeline wing
calls into the model wing.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Dict, List, Optional, Sequence

from pipeline.errors import UserValueError

DEFAULT_PIPELINES = ("rw_raw", "rw_filtered", "refinedweb")


def add_arguments(parser) -> None:
    parser.add_argument("--input", "-i", nargs="+", required=True, metavar="PATH", help="raw inputs (as for `refinery run`)")
    parser.add_argument("--output", "-o", required=True, metavar="DIR", help="ablation folder")
    parser.add_argument("--pipelines", default=",".join(DEFAULT_PIPELINES), help="comma-separated pipelines to compare")
    parser.add_argument("--config", default=None, metavar="FILE", help="pipelines file")
    parser.add_argument("--limit", type=int, default=None, help="records read per pipeline run")
    parser.add_argument("--vocab-size", type=int, default=4096)
    parser.add_argument("--preset", default="tiny", help="model preset (model/gpt.py PRESETS)")
    parser.add_argument("--max-steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--block-size", type=int, default=None)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--tasks", default="bpb,hellaswag,arc_easy,piqa,lambada", help="eval tasks")
    parser.add_argument("--eval-limit", type=int, default=500, help="items per zero-shot task")
    parser.add_argument("--text", default=None, help="held-out text for bits per byte (default: WikiText-2 raw test)")
    parser.add_argument("--data-dir", default=None, help="folder of eval task files (default: ../shared/data/eval)")
    parser.add_argument("--finetune", default=None, metavar="TASK",
                        help="also fine-tune each arm's model on TASK (sst2, wnut17, jsonl:PATH, conll:PATH; "
                             "model/finetune/) and add its dev score (and standard error) to the table")
    parser.add_argument("--finetune-steps", type=int, default=300, help="fine-tuning steps per arm")
    parser.add_argument("--finetune-lr", type=float, default=2e-3,
                        help="fine-tuning peak learning rate (2e-3 suits the tiny preset; 5e-5 is BERT's for large models)")
    parser.add_argument("--finetune-method", default="full", choices=["full", "lora"])
    parser.add_argument("--bpb-max-tokens", type=int, default=200_000, help="cap on held-out tokens scored for bits per byte")
    parser.add_argument("--mixture", action="append", default=[], metavar="NAME=MIXTURE.json",
                        help="one more arm: the same model trained on a mixture from `refinery mix` (repeatable); "
                             "compare by bits per byte, which does not depend on the tokenizer")


def _train_tokenizer(documents: str, out: str, vocab_size: int, seed: int) -> str:
    from pipeline.tokenize.train import TrainTokenizerParams, train_tokenizer

    train_tokenizer(documents, out, TrainTokenizerParams(vocab_size=vocab_size, seed=seed))
    return os.path.join(out, "tokenizer.json")


def _tokenize(documents: str, tokenizer: str, out: str) -> Dict[str, Any]:
    from pipeline.tokenize.encode import TokenizeParams, run_tokenize_pipeline

    return run_tokenize_pipeline(documents, TokenizeParams(tokenizer=tokenizer, output=out, val_fraction=0.02))


def _pretrain(tokens: str, out: str, args) -> Dict[str, Any]:
    import shutil

    from model.train import TrainConfig, train

    if os.path.isdir(out):  # an ablation re-run retrains from scratch: the folder is the ablation's own
        shutil.rmtree(out)

    cfg = dict(tokens=tokens, out=out, preset=args.preset, max_steps=args.max_steps, batch_size=args.batch_size,
               lr=args.lr, warmup=max(1, args.max_steps // 10), seed=args.seed, device=args.device,
               eval_every=0, ckpt_every=0, progress=False)
    if args.block_size:
        cfg["block_size"] = args.block_size
    return train(TrainConfig.from_dict(cfg))


def _evaluate(run_dir: str, tokens: str, args) -> Dict[str, Any]:
    from model.checkpoint import load_model_for_inference
    from model.evaluate.bpb import BPBParams
    from model.evaluate.cli import evaluate, resolve_device

    device = resolve_device(args.device)
    model, _, tok_path = load_model_for_inference(run_dir, device=device)
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(tok_path)
    return evaluate(model, tokenizer, args.tasks, data_dir=args.data_dir, limit=args.eval_limit, device=device,
                    text=args.text, bpb_params=BPBParams(max_tokens=args.bpb_max_tokens))


def _downstream(run_dir: str, out: str, args) -> Dict[str, Optional[float]]:
    """Fine-tune one arm's model the same way for every arm; its best dev accuracy (sentence tasks, with the
    binomial standard error) or entity F1 (NER), as table columns ``TASK:acc`` / ``TASK:acc_stderr``."""
    import math
    import shutil

    from model.finetune.train import FinetuneConfig, finetune

    if os.path.isdir(out):
        shutil.rmtree(out)
    summary = finetune(FinetuneConfig(checkpoint=run_dir, task=args.finetune, out=out, method=args.finetune_method,
                                      max_steps=args.finetune_steps, lr=args.finetune_lr, seed=args.seed,
                                      device=args.device, eval_every=max(1, args.finetune_steps // 5),
                                      progress=False))
    dev = summary.get("dev") or {}
    name = args.finetune.split(":")[0] if ":" in args.finetune else args.finetune
    if "accuracy" in dev:
        p, n = dev["accuracy"], dev["n"]
        return {f"{name}:acc": p, f"{name}:acc_stderr": math.sqrt(p * (1 - p) / n) if n else None}
    return {f"{name}:f1": dev.get("f1")}


def _headline(results: Dict[str, Any]) -> Dict[str, Optional[float]]:
    row: Dict[str, Optional[float]] = {}
    for task, metrics in results.items():
        for key in ("bpb", "acc_norm", "acc"):
            if key in metrics:
                row[task if key == "bpb" else f"{task}:{key}"] = metrics[key]
                break
    return row


def _splits(results: Dict[str, Any]) -> str:
    """The split each task was scored on, as one cell: ``bpb=test, hellaswag=validation, arc_easy=test``."""
    return ", ".join(f"{task}={metrics.get('split')}" for task, metrics in results.items())


def draw(table: List[Dict[str, Any]], path: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [k for k in table[0] if k not in ("pipeline", "documents", "train_tokens", "seconds", "splits")
               and not k.endswith("_stderr")]
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics), 3.4), dpi=100, squeeze=False)
    for ax, m in zip(axes[0], metrics):
        vals = [row.get(m) or 0.0 for row in table]
        ax.bar([row["pipeline"] for row in table], vals, color=["#a0aec0", "#63b3ed", "#2b6cb0", "#1a365d"][: len(vals)])
        ax.set_title(m + (" (lower is better)" if "bpb" in m else ""), fontsize=9)
        ax.tick_params(axis="x", labelrotation=20, labelsize=8)
        lo = min(vals)
        if "bpb" in m and lo > 0:
            ax.set_ylim(lo * 0.95, max(vals) * 1.02)
    fig.suptitle("Same model, same token budget: what refinement buys", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def run(args) -> Dict[str, Any]:
    from pipeline.run import run_pipeline

    pipelines = [p.strip() for p in args.pipelines.split(",") if p.strip()]
    _mixture_arms(args)  # a bad --mixture fails now, not after hours of refining
    out = args.output
    os.makedirs(out, exist_ok=True)
    start = time.time()
    refined = {}
    for name in pipelines:
        print(f"[ablate] refining with '{name}'")
        report = run_pipeline(name, args.input, os.path.join(out, name, "refined"), config=args.config, limit=args.limit)
        refined[name] = report
        if report["output_documents"] == 0:
            raise UserValueError(f"pipeline '{name}' kept no documents: nothing to train on (use more input)")
    print(f"[ablate] training one shared tokenizer on '{pipelines[0]}' (vocab {args.vocab_size})")
    tokenizer = _train_tokenizer(os.path.join(out, pipelines[0], "refined", "documents"), os.path.join(out, "tokenizer"), args.vocab_size, args.seed)
    table: List[Dict[str, Any]] = []
    for name in pipelines:
        t0 = time.time()
        tokens = os.path.join(out, name, "tokens")
        manifest = _tokenize(os.path.join(out, name, "refined", "documents"), tokenizer, tokens)
        print(f"[ablate] training {args.preset} on '{name}' for {args.max_steps} steps")
        summary = _pretrain(tokens, os.path.join(out, name, "run"), args)
        results = _evaluate(os.path.join(out, name, "run"), tokens, args)
        with open(os.path.join(out, name, "eval.json"), "w") as fh:
            json.dump(results, fh, indent=1)
        downstream = _downstream(os.path.join(out, name, "run"), os.path.join(out, name, "finetune"), args) \
            if args.finetune else {}
        row = {"pipeline": name, "documents": refined[name]["output_documents"],
               "train_tokens": manifest["splits"]["train"]["tokens"], **_headline(results), **downstream,
               "splits": _splits(results),
               "final_train_loss": summary.get("final_loss"), "seconds": round(time.time() - t0, 1)}
        table.append(row)
    from model.corridor.mixture import read_mixture

    for name, path in _mixture_arms(args):
        t0 = time.time()
        print(f"[ablate] training {args.preset} on mixture '{name}' ({path}) for {args.max_steps} steps")
        mixture = read_mixture(path)
        summary = _pretrain(path, os.path.join(out, f"mix-{name}", "run"), args)
        results = _evaluate(os.path.join(out, f"mix-{name}", "run"), path, args)
        with open(os.path.join(out, f"mix-{name}", "eval.json"), "w") as fh:
            json.dump(results, fh, indent=1)
        downstream = _downstream(os.path.join(out, f"mix-{name}", "run"), os.path.join(out, f"mix-{name}", "finetune"),
                                 args) if args.finetune else {}
        table.append({"pipeline": f"mix:{name}", "documents": sum(int(s["documents"]) for s in mixture["sources"]),
                      "train_tokens": int(mixture["total_tokens"]), **_headline(results), **downstream,
                      "splits": _splits(results), "final_train_loss": summary.get("final_loss"),
                      "seconds": round(time.time() - t0, 1)})
    result = {"pipelines": pipelines, "preset": args.preset, "max_steps": args.max_steps, "batch_size": args.batch_size,
              "tokenizer": tokenizer, "table": table,
              "finetune": {"task": args.finetune, "steps": args.finetune_steps, "lr": args.finetune_lr,
                           "method": args.finetune_method} if args.finetune else None, "seconds": round(time.time() - start, 1)}
    with open(os.path.join(out, "ablation.json"), "w") as fh:
        json.dump(result, fh, indent=1)
    draw([{k: v for k, v in r.items() if k != "final_train_loss"} for r in table], os.path.join(out, "ablation.png"))
    print(format_table(table))
    print(f"[ablate] wrote {os.path.join(out, 'ablation.json')} and ablation.png")
    return result


def _mixture_arms(args) -> List[tuple]:
    """(name, mixture path) of each --mixture arm, checked before anything is trained."""
    from model.corridor import FormatError
    from model.corridor.mixture import parse_assignments, read_mixture

    try:
        arms = list(parse_assignments(getattr(args, "mixture", None) or [], "--mixture").items())
        for _, path in arms:
            read_mixture(path)
    except FormatError as e:
        raise UserValueError(str(e)) from e
    return arms


def format_table(table: Sequence[Dict[str, Any]]) -> str:
    cols = list(table[0])
    lines = [" | ".join(cols), " | ".join("---" for _ in cols)]
    for row in table:
        lines.append(" | ".join(f"{row[c]:.4f}" if isinstance(row.get(c), float) else str(row.get(c)) for c in cols))
    return "\n".join(lines)
