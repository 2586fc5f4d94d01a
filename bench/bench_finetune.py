"""Fine-tuning and masked-LM benchmark: samples/s and peak memory of ``refinery finetune`` full vs LoRA,
and the step time of the MLM objective against the causal one at the same shape.

    .venv/bin/python bench/bench_finetune.py                  # CPU: tiny preset
    .venv/bin/python bench/bench_finetune.py --device cuda --preset gpt2-124m

1. *finetune*: a randomly initialised checkpoint of ``--preset`` (weights do not change the cost) with
   a byte-level BPE trained on SST-2 sentences; ``model.finetune.train.finetune`` on SST-2 for
   ``--steps`` steps, ``--method full`` and ``--method lora`` (rank 8, q_proj/v_proj), each in its own
   forked child so that peak memory is its own (CPU: peak RSS of the child, which includes the Python
   interpreter and data; CUDA: ``torch.cuda.max_memory_allocated``), and the float32 gradient + AdamW
   state of the trained parameters (12 bytes each), which is what LoRA saves. samples/s is taken from the log
   lines after the first (warm-up and compilation excluded), dev evaluation excluded.
2. *objective*: forward + backward + AdamW of the bare model on random ids, causal (``model(x, y)``)
   vs MLM (bidirectional attention, 15% of targets), median step time over ``--steps`` steps.
Needs no Beam (runs on a GPU box with torch/tokenizers/safetensors only).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATA = Path(os.environ.get("WEBREFINERY_DATA", REPO.parent / "shared" / "data"))


def make_checkpoint(root: Path, preset: str, vocab: int) -> Path:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from model.checkpoint import save_checkpoint
    from model.gpt import GPT, config_from_preset

    lines = [l.split("\t")[0] for l in (DATA / "finetune" / "sst2" / "train.tsv").read_text().splitlines()[1:20001]]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(lines, trainers.BpeTrainer(vocab_size=vocab, special_tokens=["<|endoftext|>"],
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                       show_progress=False))
    run = root / "base"
    run.mkdir(parents=True)
    tok.save(str(run / "tokenizer.json"))
    torch.manual_seed(0)
    model = GPT(config_from_preset(preset, 64 * ((tok.get_vocab_size() + 63) // 64), block_size=128))
    save_checkpoint(run, 0, model, run_config={"data": {"eot_id": tok.token_to_id("<|endoftext|>")}})
    return run


def finetune_child(base: Path, out: Path, method: str, args) -> dict:
    """Run one fine-tuning in a forked child; returns its measurements."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(r)
        try:
            import torch

            from model.finetune.train import FinetuneConfig, finetune

            if args.threads:
                torch.set_num_threads(args.threads)
            if args.device.startswith("cuda"):
                torch.cuda.reset_peak_memory_stats()
            t0 = time.perf_counter()
            summary = finetune(FinetuneConfig(checkpoint=str(base), task="sst2", out=str(out), method=method,
                                              max_steps=args.steps, batch_size=args.batch_size,
                                              eval_every=args.steps, log_every=max(1, args.steps // 10),
                                              limit_dev=64, max_length=64, device=args.device,
                                              compile=args.compile, progress=False, patience=0))
            wall = time.perf_counter() - t0
            log = [json.loads(l) for l in (out / "log.jsonl").read_text().splitlines()]
            rates = [rec["examples_per_s"] for rec in log[1:]] or [log[0]["examples_per_s"]]
            peak = (torch.cuda.max_memory_allocated() if args.device.startswith("cuda")
                    else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
            result = {"method": method, "samples_per_s": statistics.median(rates), "peak_bytes": peak,
                      "trainable_params": summary["trainable_params"], "total_params": summary["total_params"],
                      "saved_bytes": (out / "best" / "weights.safetensors").stat().st_size, "wall_s": wall}
            os.write(w, json.dumps(result).encode())
        except BaseException as e:  # report, never fall back into the parent's code
            os.write(w, json.dumps({"error": repr(e)}).encode())
        finally:
            os._exit(0)
    os.close(w)
    data = b""
    while chunk := os.read(r, 1 << 16):
        data += chunk
    os.waitpid(pid, 0)
    result = json.loads(data)
    if "error" in result:
        raise RuntimeError(f"{method} child failed: {result['error']}")
    return result


def objective_step_times(args, vocab: int) -> dict:
    import torch

    from model.gpt import GPT, config_from_preset
    from model.mlm import MaskingParams, mask_tokens, seeded_generator

    device = torch.device(args.device)
    out = {}
    for objective in ("causal", "mlm"):
        torch.manual_seed(0)
        cfg = config_from_preset(args.preset, 64 * ((vocab + 64) // 64), block_size=args.block_size,
                                 bidirectional=objective == "mlm")
        model = GPT(cfg).to(device)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        fwd = torch.compile(model) if args.compile else model
        x = torch.randint(0, vocab, (args.batch_size, args.block_size + 1))
        if objective == "causal":
            inp, tgt = x[:, :-1], x[:, 1:]
        else:
            inp, tgt = mask_tokens(x[:, :-1], vocab, vocab, MaskingParams(), seeded_generator("bench", 0))
        inp, tgt = inp.to(device), tgt.to(device)
        autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda"
                    else torch.autocast("cpu", enabled=False))
        times = []
        for i in range(args.steps + 3):
            t0 = time.perf_counter()
            with autocast:
                _, loss = fwd(inp, tgt)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            if device.type == "cuda":
                torch.cuda.synchronize()
            if i >= 3:  # warm-up (and compilation) left out
                times.append(time.perf_counter() - t0)
        out[objective] = statistics.median(times)
    out["mlm_over_causal"] = out["mlm"] / out["causal"]
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda" if _cuda() else "cpu")
    p.add_argument("--preset", default=None, help="model shape (default tiny on CPU, gpt2-124m on CUDA)")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--block-size", type=int, default=128, help="objective comparison: sequence length")
    p.add_argument("--vocab", type=int, default=4096)
    p.add_argument("--threads", type=int, default=None, help="torch threads (CPU)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--json", default=None, help="write the results here too")
    args = p.parse_args(argv)
    args.preset = args.preset or ("gpt2-124m" if args.device.startswith("cuda") else "tiny")
    if args.compile is None:
        args.compile = args.device.startswith("cuda")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        base = make_checkpoint(root, args.preset, args.vocab)
        rows = [finetune_child(base, root / m, m, args) for m in ("full", "lora")]
    full, lora = rows
    objective = objective_step_times(args, args.vocab)
    result = {"device": args.device, "preset": args.preset, "steps": args.steps, "batch_size": args.batch_size,
              "finetune": rows, "lora_over_full_samples_per_s": lora["samples_per_s"] / full["samples_per_s"],
              "lora_over_full_peak": lora["peak_bytes"] / full["peak_bytes"], "objective_step_s": objective}
    print(f"fine-tuning SST-2, {args.preset}, batch {args.batch_size}, max length 64, {args.device}")
    print("| method | trained params | samples/s | peak memory (MiB) | grad + AdamW state (KiB) | saved weights (KiB) |")
    print("|---|---|---|---|---|---|")
    for r in rows:  # float32 gradient + two AdamW moments per trained parameter
        print(f"| {r['method']} | {r['trainable_params']:,} of {r['total_params']:,} | {r['samples_per_s']:.1f} | "
              f"{r['peak_bytes'] / 2**20:.0f} | {r['trainable_params'] * 12 / 1024:.0f} | {r['saved_bytes'] / 1024:.0f} |")
    print(f"LoRA / full: samples/s x{result['lora_over_full_samples_per_s']:.2f}, peak memory "
          f"x{result['lora_over_full_peak']:.2f}")
    print(f"objective step time ({args.preset}, batch {args.batch_size} x {args.block_size}): causal "
          f"{objective['causal'] * 1e3:.1f} ms, mlm {objective['mlm'] * 1e3:.1f} ms "
          f"(mlm / causal x{objective['mlm_over_causal']:.2f})")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return 0


def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        return False


if __name__ == "__main__":
    sys.exit(main())
