"""HellaSwag scoring speed: items/s of the batched scorer against a one-request-at-a-time baseline.

Both run in this process on the same model and items; the script prints items/s of each, the ratio,
and checks that they agree on acc / acc_norm (the batched scorer must not change the answers).

The model is a checkpoint (``--checkpoint run/``, with its tokenizer) or a randomly initialised
preset (``--preset tiny`` or ``gpt2-124m``) with the GPT-2 tokenizer from
``../shared/data/tokenizers/gpt2`` (real token counts, 50,257 tokens).

    .venv/bin/python bench/bench_eval.py --preset tiny --limit 100 --baseline-limit 25 --device cpu
    .venv/bin/python bench/bench_eval.py --preset gpt2-124m --limit 1000 --device cuda --dtype bfloat16
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from model.evaluate.scoring import (  # noqa: E402
    TextTokenizer,
    autocast_context,
    encode_context_continuation,
    evaluate_multiple_choice,
)
from model.evaluate.tasks import load_task  # noqa: E402

SHARED = Path(os.environ.get("WEBREFINERY_DATA", REPO.parent / "shared" / "data"))


def gpt2_tokenizer() -> TextTokenizer:
    """The GPT-2 byte-level BPE from the shared data folder."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    folder = SHARED / "tokenizers" / "gpt2"
    if not (folder / "encoder.json").exists():
        raise FileNotFoundError(f"{folder}/encoder.json is missing: set WEBREFINERY_DATA to the shared data folder")
    tok = Tokenizer(models.BPE.from_file(str(folder / "encoder.json"), str(folder / "vocab.bpe")))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(["<|endoftext|>"])
    return TextTokenizer(tok)


def load_model(args):
    if args.checkpoint:
        from model.checkpoint import load_model_for_inference

        model, config, tok_path = load_model_for_inference(args.checkpoint, device=args.device)
        if tok_path is None:
            raise SystemExit(f"{args.checkpoint} has no tokenizer.json")
        return model, TextTokenizer(tok_path), f"checkpoint {args.checkpoint}"
    from model.gpt import GPT, config_from_preset

    tok = gpt2_tokenizer()
    torch.manual_seed(0)
    model = GPT(config_from_preset(args.preset, vocab_size=tok.vocab_size)).to(args.device).eval()
    return model, tok, f"random {args.preset} ({model.num_params(non_embedding=False) / 1e6:.1f}M params)"


@torch.no_grad()
def baseline_scores(model, tok, items, device, dtype):
    """One forward per (context, choice) over the whole sequence, full-vocabulary log-softmax."""
    block = model.config.block_size
    acc = acc_norm = 0
    for item in items:
        lls = []
        for choice in item.choices:
            ctx, cont = encode_context_continuation(tok, item.context, " " + choice)
            whole = (ctx + cont)[-(block + 1):]
            x = torch.tensor([whole[:-1]], device=device)
            with autocast_context(torch.device(device), dtype):
                logits = model(x)[0]
            logp = F.log_softmax(logits.float(), dim=-1)[0]
            n = len(cont)
            positions = torch.arange(len(whole) - 1 - n, len(whole) - 1, device=device)
            lls.append(float(logp[positions, torch.tensor(cont, device=device)].sum()))
        lls = np.array(lls)
        lengths = np.array([len(c) for c in item.choices], dtype=float)
        acc += int(np.argmax(lls)) == item.gold
        acc_norm += int(np.argmax(lls / lengths)) == item.gold
    return acc / len(items), acc_norm / len(items)


def sync(device):
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--preset", default="tiny", help="random model preset when no --checkpoint")
    parser.add_argument("--limit", type=int, default=200, help="HellaSwag items for the batched scorer")
    parser.add_argument("--baseline-limit", type=int, default=50, help="items for the one-at-a-time baseline")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default=None, choices=[None, "float32", "bfloat16", "float16"])
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    model, tok, what = load_model(args)
    items = load_task("hellaswag", args.data_dir, limit=args.limit)
    n_base = min(args.baseline_limit, len(items))
    print(f"model: {what}; device {args.device}; dtype {args.dtype or 'float32'}; batch {args.batch_size}; "
          f"torch threads {torch.get_num_threads()}")

    # warm-up (kernels, allocator)
    evaluate_multiple_choice(model, tok, items[:4], batch_size=args.batch_size, dtype=args.dtype)
    sync(args.device)

    t0 = time.perf_counter()
    res = evaluate_multiple_choice(model, tok, items, batch_size=args.batch_size, dtype=args.dtype)
    sync(args.device)
    t_batched = time.perf_counter() - t0
    batched_rate = len(items) / t_batched

    t0 = time.perf_counter()
    base_acc, base_norm = baseline_scores(model, tok, items[:n_base], args.device, args.dtype)
    sync(args.device)
    t_base = time.perf_counter() - t0
    base_rate = n_base / t_base

    same = evaluate_multiple_choice(model, tok, items[:n_base], batch_size=args.batch_size, dtype=args.dtype)
    agree = abs(same["acc"] - base_acc) < 1e-9 and abs(same["acc_norm"] - base_norm) < 1e-9
    print(f"batched scorer : {len(items):5d} items in {t_batched:7.2f}s = {batched_rate:8.2f} items/s "
          f"(acc {res['acc']:.4f}, acc_norm {res['acc_norm']:.4f})")
    print(f"baseline 1-by-1: {n_base:5d} items in {t_base:7.2f}s = {base_rate:8.2f} items/s")
    print(f"speed-up: {batched_rate / base_rate:.2f}x; answers agree with the baseline on {n_base} items: {agree}")
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
