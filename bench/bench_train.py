"""Training throughput benchmark: step-time split (data / forward+backward / optimizer), the data
loader's share of a step, tokens/s, MFU and peak memory.

    .venv/bin/python bench/bench_train.py                 # CPU: tiny model (default when no GPU)
    .venv/bin/python bench/bench_train.py --device cuda   # GPU: GPT-2 124M, seq 1024, bf16, compiled

Token shards: ``--tokens DIR`` (the output of ``refinery tokenize``) or, by default, synthetic shards
(Zipf-distributed ids, documents of random length; GPT-2's 50,257 vocabulary on CUDA, 1,024 on CPU
so that the tiny model's step is not all output layer) written to a temp dir.

Two measurements in one process:
1. *split*: the training step of model/train.py, timed phase by phase (with a device sync after each
   phase, which costs a little throughput): ``data`` = waiting for ``loader.next_batch()`` (with the
   background prefetch thread, as the trainer runs it, and without it), ``fwd+bwd``, ``optimizer``
   (clip + AdamW step + zero_grad). Goal: data < 5% of the step.
2. *train()*: the real trainer end to end (no per-phase syncs) for tokens/s and MFU; its ratio to
   the split loop's throughput is the trainer's own overhead (logging, NaN checks, schedule).
3. ``--mixture``: the same split with a 3-source mixture (``refinery mix`` manifest over three synthetic
   token sets, epochs 1 / 2 / 3) instead of one token set, and the loader alone (``next_batch`` without a
   model, no prefetch) on both: batches/s of the mixture over the single source, and the heap bytes the
   shards hold (0: memory-mapped, no copy).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from model.corridor.token_shards import chunk_documents, write_token_set  # noqa: E402  (the format's one writer)
from model.corridor.mixture import plan_mixture, source_facts, write_mixture  # noqa: E402
from model.data import TokenMixture, WindowLoader, make_window_loader, open_token_split  # noqa: E402
from model.flops import flops_per_token, mfu, peak_flops_for_device  # noqa: E402
from model.gpt import GPT, config_from_preset  # noqa: E402
from model.train import TrainConfig, param_groups, train  # noqa: E402


def write_synthetic_tokens(out: Path, n_tokens: int, vocab: int = 50257, seed: int = 0) -> Path:
    """Zipf-like token ids in documents of 50..2000 tokens, each ending with eot = vocab - 1."""
    rng = np.random.default_rng(seed)
    eot = vocab - 1

    def docs(total):
        made = 0
        while made < total:
            n = int(rng.integers(50, 2000))
            ids = np.minimum(rng.zipf(1.2, size=n) - 1, eot - 1).astype(np.int64)
            ids[-1] = eot
            made += n
            yield ids

    write_token_set(out, {"train": chunk_documents(docs(n_tokens), 2000),
                          "val": chunk_documents(docs(max(n_tokens // 50, 100_000)), 2000)}, vocab_size=vocab, eot_id=eot)
    return out


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def write_synthetic_mixture(out: Path, n_tokens: int, vocab: int) -> Path:
    """Three synthetic token sets (1/2, 1/3, 1/6 of ``n_tokens``) and a mixture of them with epochs 1, 2, 3."""
    sources = []
    for i, (name, part, epochs) in enumerate((("web", 1 / 2, 1.0), ("wiki", 1 / 3, 2.0), ("books", 1 / 6, 3.0))):
        write_synthetic_tokens(out / name, int(n_tokens * part), vocab=vocab, seed=i + 1)
        sources.append((source_facts(name, out / name), epochs))
    plan = plan_mixture([f for f, _ in sources], epochs={f["name"]: e for f, e in sources}, relative_to=out)
    return write_mixture(out / "mixture.json", plan)


def open_train_data(tokens: Path):
    return TokenMixture(tokens) if tokens.suffix == ".json" else open_token_split(tokens, "train")


def time_loader(args, tokens: Path, batches: int) -> dict:
    """The loader alone: batches/s of next_batch (no prefetch, no model) and the shards' heap bytes."""
    data = open_train_data(tokens)
    loader = make_window_loader(data, args.block_size, args.batch_size, seed=0, prefetch=0)
    for _ in range(3):
        loader.next_batch()
    t0 = time.perf_counter()
    for _ in range(batches):
        loader.next_batch()
    seconds = time.perf_counter() - t0
    sources = data.sources if isinstance(data, TokenMixture) else [data]
    return {"batches_per_s": batches / seconds, "heap_bytes": sum(s.resident_bytes for s in sources)}


def time_split(args, tokens_dir: Path, device: torch.device, prefetch: int) -> dict:
    """Per-phase times of the trainer's step (same model, loader, optimizer and autocast)."""
    shards = open_train_data(tokens_dir)
    cfg = config_from_preset(args.preset, 64 * -(-shards.vocab_size // 64), block_size=args.block_size)
    torch.manual_seed(0)
    raw = GPT(cfg).to(device)
    model = torch.compile(raw) if args.compile else raw
    fused = {"fused": True} if device.type == "cuda" else {}
    opt = torch.optim.AdamW(param_groups(raw, 0.1), lr=1e-4, betas=(0.9, 0.95), **fused)
    loader = make_window_loader(shards, cfg.block_size, args.batch_size, seed=0, device=device, prefetch=prefetch)
    bf16 = device.type == "cuda"
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext
    params = [p for p in raw.parameters()]
    times = {"data": [], "fwd_bwd": [], "optimizer": [], "step": []}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for i in range(args.warmup_steps + args.steps):
        sync(device)
        t0 = time.perf_counter()
        x, y = loader.next_batch()
        sync(device)
        t1 = time.perf_counter()
        with autocast():
            _, loss = model(x, y)
        loss.backward()
        sync(device)
        t2 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss.item()
        sync(device)
        t3 = time.perf_counter()
        if i >= args.warmup_steps:
            for k, v in (("data", t1 - t0), ("fwd_bwd", t2 - t1), ("optimizer", t3 - t2), ("step", t3 - t0)):
                times[k].append(v)
    loader.close()
    med = {k: statistics.median(v) for k, v in times.items()}
    total = sum(times["step"])
    tps = args.steps * args.batch_size * cfg.block_size / total
    peak = peak_flops_for_device(torch.cuda.get_device_name(device)) if device.type == "cuda" else None
    out = {
        "prefetch": prefetch,
        "median_ms": {k: round(1000 * v, 3) for k, v in med.items()},
        "data_share": sum(times["data"]) / total,
        "tokens_per_s": tps,
        "mfu": mfu(tps, flops_per_token(cfg), peak),
        "params": raw.num_params(non_embedding=False),
    }
    if device.type == "cuda":
        out["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return out


def time_trainer(args, tokens_dir: Path, device: torch.device, workdir: Path) -> dict:
    steps = args.warmup_steps + args.steps
    cfg = TrainConfig(tokens=str(tokens_dir), out=str(workdir / "run"), preset=args.preset,
                      block_size=args.block_size, batch_size=args.batch_size, max_steps=steps, warmup=1,
                      eval_every=0, eval_steps=1, ckpt_every=0, log_every=1, device=device.type,
                      compile=args.compile, progress=False, prefetch=2)
    train(cfg)
    log = [json.loads(line) for line in (workdir / "run" / "log.jsonl").read_text().splitlines()]
    measured = [r for r in log if r["step"] > args.warmup_steps]
    tps = statistics.median(r["tokens_per_s"] for r in measured)
    mfus = [r["mfu"] for r in measured if r["mfu"] is not None]
    return {"tokens_per_s": tps, "mfu": statistics.median(mfus) if mfus else None}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--tokens", help="token-shard dir (default: synthetic shards in a temp dir)")
    ap.add_argument("--preset", help="model preset (default: tiny on CPU, gpt2-124m on CUDA)")
    ap.add_argument("--block-size", type=int, help="sequence length (default: 128 on CPU, 1024 on CUDA)")
    ap.add_argument("--batch-size", type=int, help="sequences per step (default: 16 on CPU, 32 on CUDA)")
    ap.add_argument("--steps", type=int, default=None, help="measured steps (default: 30 CPU, 50 CUDA)")
    ap.add_argument("--warmup-steps", type=int, default=None, help="unmeasured first steps (default: 3 CPU, 10 CUDA)")
    ap.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                    help="torch.compile (default: on for CUDA)")
    ap.add_argument("--vocab", type=int, help="synthetic vocabulary (default: 1,024 on CPU, GPT-2's 50,257 on CUDA)")
    ap.add_argument("--threads", type=int, help="torch intra-op threads on CPU")
    ap.add_argument("--skip-trainer", action="store_true", help="only the per-phase split")
    ap.add_argument("--mixture", action="store_true", help="also a 3-source mixture against the single source")
    args = ap.parse_args()
    device = torch.device("cuda" if (args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()))
                          else "cpu")
    gpu = device.type == "cuda"
    args.preset = args.preset or ("gpt2-124m" if gpu else "tiny")
    args.block_size = args.block_size or (1024 if gpu else 128)
    args.batch_size = args.batch_size or (32 if gpu else 16)
    args.steps = args.steps or (50 if gpu else 30)
    args.warmup_steps = args.warmup_steps if args.warmup_steps is not None else (10 if gpu else 3)
    args.compile = gpu if args.compile is None else args.compile
    args.vocab = args.vocab or (50257 if gpu else 1024)
    if args.threads:
        torch.set_num_threads(args.threads)
    if gpu:
        torch.backends.cuda.matmul.allow_tf32 = True

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        need = (args.warmup_steps + args.steps) * args.batch_size * (args.block_size + 1) * 2 + 200_000
        if args.tokens:
            tokens_dir = Path(args.tokens)
        else:
            t0 = time.perf_counter()
            tokens_dir = write_synthetic_tokens(tmp / "tokens", need, vocab=args.vocab)
            print(f"synthetic shards: {need:,} tokens in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
        print(f"device {device}{' (' + torch.cuda.get_device_name(device) + ')' if gpu else ''}, "
              f"preset {args.preset}, seq {args.block_size}, batch {args.batch_size}, "
              f"{'bf16' if gpu else 'fp32'}, compile {args.compile}, threads {torch.get_num_threads()}")
        results = {"device": str(device), "preset": args.preset, "block_size": args.block_size,
                   "batch_size": args.batch_size, "compile": args.compile}
        for prefetch in (2, 0):
            r = time_split(args, tokens_dir, device, prefetch)
            results[f"split_prefetch{prefetch}"] = r
            m = r["median_ms"]
            print(f"split (prefetch={prefetch}): step {m['step']:.2f} ms = data {m['data']:.3f} + fwd/bwd "
                  f"{m['fwd_bwd']:.2f} + optimizer {m['optimizer']:.2f} ms (medians); data share "
                  f"{100 * r['data_share']:.2f}% (goal < 5%); {r['tokens_per_s']:,.0f} tokens/s"
                  + (f"; MFU {100 * r['mfu']:.1f}%" if r["mfu"] is not None else "; MFU n/a on CPU")
                  + (f"; peak memory {r['peak_memory_gib']:.1f} GiB" if "peak_memory_gib" in r else ""))
        if args.mixture:
            t0 = time.perf_counter()
            mix = write_synthetic_mixture(tmp / "mix", need, vocab=args.vocab)
            print(f"synthetic mixture: 3 sources, {need:,} tokens in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
            for prefetch in (2, 0):
                r = time_split(args, mix, device, prefetch)
                results[f"mixture_split_prefetch{prefetch}"] = r
                m = r["median_ms"]
                print(f"mixture split (prefetch={prefetch}): step {m['step']:.2f} ms, data {m['data']:.3f} ms; data "
                      f"share {100 * r['data_share']:.2f}% (single source: "
                      f"{100 * results[f'split_prefetch{prefetch}']['data_share']:.2f}%; goal < 5%)")
            n = max(200, 4 * args.steps)
            single, mixed = time_loader(args, tokens_dir, n), time_loader(args, mix, n)
            results["loader"] = {"single": single, "mixture": mixed}
            print(f"loader alone ({n} batches, no prefetch): single {single['batches_per_s']:,.0f} batches/s, "
                  f"3-source mixture {mixed['batches_per_s']:,.0f} batches/s = "
                  f"{mixed['batches_per_s'] / single['batches_per_s']:.2f}x; heap bytes held by the shards: "
                  f"{single['heap_bytes']} / {mixed['heap_bytes']} (memory-mapped)")
        if not args.skip_trainer:
            r = time_trainer(args, tokens_dir, device, tmp)
            results["trainer"] = r
            base = results["split_prefetch2"]["tokens_per_s"]
            print(f"train(): {r['tokens_per_s']:,.0f} tokens/s = {r['tokens_per_s'] / base:.2f}x the split loop"
                  + (f"; MFU {100 * r['mfu']:.1f}%" if r["mfu"] is not None else ""))
        print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
