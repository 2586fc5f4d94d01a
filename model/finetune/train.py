"""``refinery finetune``: fine-tune a pretrained checkpoint on a labelled task, full or LoRA.

One optimizer step: ``batch_size`` examples (right-padded to the longest in the batch) from a seeded
per-epoch permutation of the training set, bf16 autocast on CUDA, gradient clipping, AdamW, linear
warmup over ``warmup_frac`` of ``max_steps`` then linear decay to 0 (BERT's schedule). Every
``eval_every`` steps the dev set is scored (accuracy for sentence tasks, entity micro-F1 for NER);
the best weights so far go to ``OUT/best/``; training stops early after ``patience`` evaluations
without improvement. Resume (``--resume``) restores the weights, optimizer, data position, RNG
states and early-stopping state from the latest checkpoint, so a resumed run equals an
uninterrupted one bit for bit on CPU in float32.

``--method full`` trains every parameter; ``--method lora`` freezes the body, wraps ``lora_targets``
with low-rank adapters (model/finetune/lora.py) and trains only the adapters and the head: its
checkpoints and ``best/`` hold only those tensors. Defaults: full lr 5e-5 (BERT's fine-tuning range
2e-5..5e-5), LoRA lr 5e-4, rank 8, alpha 16, targets q_proj,v_proj (the LoRA paper's choice),
weight decay 0.01, warmup 6% (RoBERTa), batch 32, patience 5.

Run directory: config.json, log.jsonl (step, loss, lr, examples_per_s, and the dev metric when
measured), checkpoints/step_*/ (model/checkpoint.py format, safetensors), best/ (weights.safetensors
+ finetune.json: everything needed to rebuild the model), metrics.json (the best dev scores, full
report) and report.txt (the classification-report table).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from model import checkpoint as ckpt
from model.corridor.files import atomic_dir
from model.errors import UserError, UserValueError
from model.finetune.data import IGNORE_INDEX, Encoded, TaskData, encode_examples, load_task
from model.finetune.heads import Classifier, TrainableView, trainable_state
from model.finetune.lora import apply_lora
from model.finetune.metrics import classification_scores, entity_scores, report_table
from model.gpt import GPT, GPTConfig

BEST_DIR = "best"
WEIGHTS_FILE = "weights.safetensors"
META_FILE = "finetune.json"


@dataclass
class FinetuneConfig:
    """A fine-tuning run; ``refinery finetune`` flags carry the same names."""

    checkpoint: str = ""  # pretrained run directory or step directory
    task: str = ""  # sst2 | wnut17 | jsonl:TRAIN[,DEV] | conll:TRAIN[,DEV]
    out: str = ""
    method: str = "full"  # full | lora
    lora_rank: int = 8
    lora_alpha: float = 16.0
    lora_dropout: float = 0.05
    lora_targets: str = "q_proj,v_proj"
    pooling: Optional[str] = None  # None: last (causal) / mean (bidirectional)
    subword: str = "first"  # token tasks: the sub-word that carries a word's label (first | last)
    dropout: float = 0.1
    max_length: int = 128
    max_steps: int = 1000
    batch_size: int = 32
    lr: Optional[float] = None  # None: 5e-5 (full) / 5e-4 (lora)
    warmup_frac: float = 0.06
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    eval_every: int = 100
    patience: int = 5  # evaluations without improvement before stopping (0: never stop early)
    ckpt_every: int = 0  # 0: at evaluations' pace (every eval_every steps) and at the end
    keep_last: int = 2
    log_every: int = 10
    limit_train: Optional[int] = None  # first N training examples (after a seeded shuffle)
    limit_dev: Optional[int] = None
    data_dir: Optional[str] = None
    eval_batch_size: int = 64
    device: str = "auto"
    dtype: str = "auto"
    compile: Optional[bool] = None
    seed: int = 1337
    resume: bool = False
    stop_at_step: Optional[int] = None
    progress: bool = True

    def validate(self) -> None:
        for key in ("checkpoint", "task", "out"):
            if not getattr(self, key):
                raise UserValueError(f"finetune: --{key} is required")
        if self.method not in ("full", "lora"):
            raise UserValueError(f"finetune: --method must be full or lora, got {self.method!r}")
        for key in ("max_length", "max_steps", "batch_size", "eval_every", "log_every", "eval_batch_size", "lora_rank"):
            if getattr(self, key) <= 0:
                raise UserValueError(f"finetune: {key} must be positive, got {getattr(self, key)}")
        for key in ("patience", "ckpt_every", "keep_last", "weight_decay", "grad_clip", "dropout", "lora_dropout"):
            if getattr(self, key) < 0:
                raise UserValueError(f"finetune: {key} must be >= 0, got {getattr(self, key)}")
        if not 0 <= self.warmup_frac < 1:
            raise UserValueError(f"finetune: warmup_frac must be in [0, 1), got {self.warmup_frac}")
        if self.lr is not None and self.lr <= 0:
            raise UserValueError("finetune: lr must be positive")
        if self.dtype not in ("auto", "float32", "bfloat16"):
            raise UserValueError(f"finetune: dtype must be auto, float32 or bfloat16, got {self.dtype!r}")

    @property
    def peak_lr(self) -> float:
        return self.lr if self.lr is not None else (5e-5 if self.method == "full" else 5e-4)


def lr_at(step: int, cfg: FinetuneConfig) -> float:
    """Linear warmup over warmup_frac * max_steps, then linear decay to 0 at max_steps."""
    warm = int(round(cfg.warmup_frac * cfg.max_steps))
    if warm and step < warm:
        return cfg.peak_lr * (step + 1) / warm
    return cfg.peak_lr * max(0.0, (cfg.max_steps - step) / max(1, cfg.max_steps - warm))


# --------------------------------------------------------------------------------------------- building


def load_body(checkpoint) -> tuple[GPT, dict, Optional[str], Path]:
    """(pretrained GPT on CPU, its run config.json (or {}), tokenizer.json path, step dir)."""
    model, _config, tok = ckpt.load_model_for_inference(checkpoint, device="cpu")
    step_dir = ckpt.resolve_checkpoint(checkpoint)
    run_dir = step_dir.parent.parent if step_dir.parent.name == "checkpoints" else step_dir
    run_cfg = json.loads((run_dir / "config.json").read_text()) if (run_dir / "config.json").is_file() else {}
    if tok is None:
        raise FileNotFoundError(f"{checkpoint} has no tokenizer.json beside it: fine-tuning needs the tokenizer")
    return model, run_cfg, tok, step_dir


def pad_id_of(run_cfg: dict, tokenizer) -> int:
    """Padding id: the end-of-text id (never inside an encoded sentence), else 0."""
    eot = (run_cfg.get("data") or {}).get("eot_id")
    if eot is None:
        eot = tokenizer.token_to_id("<|endoftext|>")
    return int(eot) if eot is not None else 0


def build_model(body: GPT, meta: dict) -> Classifier:
    """The classifier for ``meta`` (finetune.json's contents), LoRA adapters applied when asked."""
    model = Classifier(body, len(meta["labels"]), meta["kind"], meta["pooling"], meta["dropout"])
    if meta["method"] == "lora":
        lora = meta["lora"]
        apply_lora(model.body, lora["targets"], lora["rank"], lora["alpha"], lora["dropout"])
    else:
        if not body.config.tie_embeddings:  # the LM head is not used by a task head
            body.lm_head.weight.requires_grad_(False)
    return model


def collate(batch: list[Encoded], kind: str, pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(ids, attention mask, labels): right-padded to the longest example."""
    T = max(len(e.ids) for e in batch)
    ids = torch.full((len(batch), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), T), dtype=torch.bool)
    if kind == "sequence":
        labels = torch.tensor([e.label for e in batch], dtype=torch.long)
    else:
        labels = torch.full((len(batch), T), IGNORE_INDEX, dtype=torch.long)
    for i, e in enumerate(batch):
        ids[i, :len(e.ids)] = torch.tensor(e.ids)
        mask[i, :len(e.ids)] = True
        if kind == "token":
            labels[i, :len(e.label)] = torch.tensor(e.label)
    return ids.to(device), mask.to(device), labels.to(device)


def loss_of(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE_INDEX)


def predict(model: Classifier, examples: list[Encoded], kind: str, pad_id: int, device, batch_size: int,
            autocast=contextlib.nullcontext) -> list:
    """Predicted label id per example (sequence) or per word, -1 for words cut off (token)."""
    was_training = model.training
    model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(examples), batch_size):
            chunk = examples[start:start + batch_size]
            ids, mask, labels = collate(chunk, kind, pad_id, device)
            with autocast():
                logits = model(ids, mask)
            pred = logits.argmax(-1).cpu()
            for i, e in enumerate(chunk):
                if kind == "sequence":
                    out.append(int(pred[i]))
                else:
                    first = [j for j, l in enumerate(e.label) if l != IGNORE_INDEX]
                    words = [int(pred[i, j]) for j in first]
                    out.append(words + [-1] * (e.n_words - len(words)))
    model.train(was_training)
    return out


def score(task: TaskData, examples: list[Encoded], rows: list, predictions: list) -> dict:
    """Dev scores: classification_scores (sequence) or entity_scores (token; cut-off words -> O)."""
    if task.kind == "sequence":
        return classification_scores([l for _, l in rows], predictions, task.labels)
    true = [[task.labels[t] for t in tags] for _, tags in rows]
    pred = [[task.labels[p] if p >= 0 else "O" for p in words] for words in predictions]
    return entity_scores(true, pred)


def headline(task: TaskData, scores: dict) -> tuple[str, float]:
    return ("accuracy", scores["accuracy"]) if task.kind == "sequence" else ("entity_f1", scores["f1"])


# --------------------------------------------------------------------------------------------- the loop


def _resolve_device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserValueError("device 'cuda' requested but torch sees no CUDA device")
    return name


def _write_best(run_dir: Path, model: Classifier, meta: dict, scores: dict, step: int) -> None:
    from safetensors.torch import save_file

    tensors = {k: v.to("cpu").contiguous().clone() for k, v in trainable_state(model).items()}
    with atomic_dir(run_dir / BEST_DIR) as tmp:  # files get the umask's mode (safetensors alone writes 0600)
        save_file(tensors, str(tmp / WEIGHTS_FILE), metadata={"format": "webrefinery-finetune"})
        (tmp / META_FILE).write_text(json.dumps({**meta, "step": step, "dev": scores}, indent=1, sort_keys=True) + "\n")


def finetune(cfg: FinetuneConfig) -> dict:
    """Fine-tune (or resume); returns the summary (best dev scores and where things are)."""
    from tokenizers import Tokenizer
    from tqdm import tqdm

    cfg.validate()
    device = torch.device(_resolve_device(cfg.device))
    dtype = torch.bfloat16 if (cfg.dtype == "bfloat16" or (cfg.dtype == "auto" and device.type == "cuda"
                                                            and torch.cuda.is_bf16_supported())) else torch.float32
    use_compile = (device.type == "cuda") if cfg.compile is None else cfg.compile
    run_dir = Path(cfg.out)
    latest = ckpt.latest_checkpoint(run_dir) if run_dir.is_dir() else None
    if latest is not None and not cfg.resume:
        raise UserError(f"{run_dir} already holds checkpoints (latest {latest.name}); pass --resume or another --out")
    run_dir.mkdir(parents=True, exist_ok=True)

    # ---- data
    task = load_task(cfg.task, cfg.data_dir, seed=cfg.seed)
    if cfg.limit_train is not None:
        order = np.random.default_rng([cfg.seed, 7]).permutation(len(task.train))[:cfg.limit_train]
        task.train = [task.train[i] for i in sorted(order.tolist())]
    if cfg.limit_dev is not None:
        task.dev = task.dev[:cfg.limit_dev]
    body, run_cfg, tok_path, base_step = load_body(cfg.checkpoint)
    tokenizer = Tokenizer.from_file(tok_path)
    pad_id = pad_id_of(run_cfg, tokenizer)
    max_length = min(cfg.max_length, body.config.block_size)
    train_ex = encode_examples(task, tokenizer, max_length, "train", cfg.subword)
    dev_ex = encode_examples(task, tokenizer, max_length, "dev", cfg.subword)
    if len(train_ex) < cfg.batch_size:
        raise UserValueError(f"{len(train_ex)} training examples, fewer than one batch of {cfg.batch_size}")

    # ---- model
    meta = {"task": cfg.task, "kind": task.kind, "labels": task.labels, "method": cfg.method,
            "pooling": cfg.pooling or ("mean" if body.config.bidirectional else "last"), "dropout": cfg.dropout,
            "pad_id": pad_id, "max_length": max_length, "subword": cfg.subword, "base_checkpoint": str(base_step.resolve()),
            "model": body.config.to_dict(), "tokenizer": str(Path(tok_path).resolve()),
            "lora": {"rank": cfg.lora_rank, "alpha": cfg.lora_alpha, "dropout": cfg.lora_dropout,
                     "targets": [t.strip() for t in cfg.lora_targets.split(",") if t.strip()]}
            if cfg.method == "lora" else None}
    torch.manual_seed(cfg.seed)
    model = build_model(body, meta).to(device)
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    n_total = sum(p.numel() for p in model.parameters())
    decay = [p for n, p in model.named_parameters() if p.requires_grad and p.ndim >= 2 and "tok_emb" not in n]
    no_decay = [p for n, p in model.named_parameters() if p.requires_grad and not (p.ndim >= 2 and "tok_emb" not in n)]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=cfg.peak_lr)
    forward = torch.compile(model) if use_compile else model
    view = TrainableView(model)

    def autocast():
        if dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=dtype)

    run_config = {"finetune": dataclasses.asdict(cfg), "meta": meta, "trainable_params": n_trainable,
                  "total_params": n_total}
    ckpt._write_json_atomic(run_dir / "config.json", run_config)
    log_path = run_dir / "log.jsonl"

    # ---- state
    step, epoch, position = 0, 0, 0
    best_metric, best_step, since_best, history = -math.inf, 0, 0, []
    if latest is not None:
        state = ckpt.load_checkpoint(latest, view, optimizer)
        step = int(state["step"])
        epoch, position = int(state["data"]["epoch"]), int(state["data"]["position"])
        ckpt.restore_rng_states(state.get("rng") or {})
        extra = state.get("extra") or {}
        best_metric = float(extra.get("best_metric", -math.inf))
        best_step, since_best = int(extra.get("best_step", 0)), int(extra.get("since_best", 0))
        history = list(extra.get("history", []))
        if log_path.is_file():
            kept = [l for l in log_path.read_text().splitlines() if l.strip() and json.loads(l).get("step", 0) <= step]
            log_path.write_text("".join(l + "\n" for l in kept))
        print(f"[finetune] resumed from {latest} at step {step}", file=sys.stderr)
    elif log_path.exists():
        log_path.unlink()
    print(f"[finetune] {task.name}: {len(train_ex)} train / {len(dev_ex)} dev, {len(task.labels)} labels, "
          f"method {cfg.method}, {n_trainable:,} of {n_total:,} parameters trained, pooling "
          f"{meta['pooling'] if task.kind == 'sequence' else '-'}, device {device}, compile {use_compile}",
          file=sys.stderr)

    def order_for(ep: int) -> np.ndarray:
        return np.random.default_rng([cfg.seed, ep]).permutation(len(train_ex))

    def save(at: int) -> None:
        extra = {"best_metric": best_metric, "best_step": best_step, "since_best": since_best, "history": history}
        ckpt.save_checkpoint(run_dir, at, view, optimizer, scheduler_state={"step": at, "lr_next": lr_at(at, cfg)},
                             data_state={"epoch": epoch, "position": position, "seed": cfg.seed}, extra=extra)
        if cfg.keep_last:
            ckpt.prune_checkpoints(run_dir, cfg.keep_last)

    end_step = cfg.max_steps if cfg.stop_at_step is None else min(cfg.max_steps, cfg.stop_at_step)
    ckpt_every = cfg.ckpt_every or cfg.eval_every
    metric_name = "accuracy" if task.kind == "sequence" else "entity_f1"
    bar = tqdm(total=cfg.max_steps, initial=step, disable=not cfg.progress, dynamic_ncols=True, mininterval=1.0,
               desc="finetune")
    order = order_for(epoch)
    stopped_early = False
    window_t0, window_n = time.perf_counter(), 0
    model.train()
    while step < end_step and not (cfg.patience and since_best >= cfg.patience):
        if position + cfg.batch_size > len(train_ex):
            epoch, position = epoch + 1, 0
            order = order_for(epoch)
        batch = [train_ex[int(i)] for i in order[position:position + cfg.batch_size]]
        position += cfg.batch_size
        lr = lr_at(step, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        ids, mask, labels = collate(batch, task.kind, pad_id, device)
        with autocast():
            logits = forward(ids, mask)
        loss = loss_of(logits, labels)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad],
                                                   cfg.grad_clip if cfg.grad_clip > 0 else float("inf"))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        window_n += len(batch)
        bar.update(1)
        do_eval = step % cfg.eval_every == 0 or step == cfg.max_steps
        record = None
        if step % cfg.log_every == 0 or do_eval or step == end_step:
            now = time.perf_counter()
            record = {"step": step, "epoch": epoch, "loss": float(loss.detach()), "lr": lr, "grad_norm": float(grad_norm),
                      "examples_per_s": window_n / max(now - window_t0, 1e-9)}
        if do_eval:
            preds = predict(model, dev_ex, task.kind, pad_id, device, cfg.eval_batch_size, autocast)
            scores = score(task, dev_ex, task.dev, preds)
            _, value = headline(task, scores)
            history.append({"step": step, metric_name: value})
            record[f"dev_{metric_name}"] = value
            if value > best_metric:
                best_metric, best_step, since_best = value, step, 0
                _write_best(run_dir, model, meta, scores, step)
            else:
                since_best += 1
            bar.write(f"step {step}: loss {float(loss.detach()):.4f} dev {metric_name} {value:.4f} (best {best_metric:.4f} "
                      f"at {best_step})")
        if record is not None:
            with open(log_path, "a") as f:
                f.write(json.dumps(record) + "\n")
            window_t0, window_n = time.perf_counter(), 0
        if step % ckpt_every == 0 or step == end_step or (cfg.patience and since_best >= cfg.patience):
            save(step)
    bar.close()
    if cfg.patience and since_best >= cfg.patience and step < cfg.max_steps:
        stopped_early = True
        print(f"[finetune] early stop at step {step}: {since_best} evaluations without a better dev "
              f"{metric_name} (best {best_metric:.4f} at step {best_step})", file=sys.stderr)
    summary = {"run_dir": str(run_dir), "steps": step, "max_steps": cfg.max_steps, "stopped_early": stopped_early,
               "best_step": best_step, f"best_dev_{metric_name}": best_metric if best_step else None,
               "trainable_params": n_trainable, "total_params": n_total, "history": history,
               "finished": step >= cfg.max_steps or stopped_early}
    best_meta = run_dir / BEST_DIR / META_FILE
    if best_meta.is_file() and summary["finished"]:
        scores = json.loads(best_meta.read_text())["dev"]
        table = report_table(scores)
        (run_dir / "report.txt").write_text(table + "\n")
        ckpt._write_json_atomic(run_dir / "metrics.json", {"task": cfg.task, "kind": task.kind, "labels": task.labels,
                                                           "best_step": best_step, "dev": scores})
        summary["dev"] = {k: v for k, v in scores.items() if not isinstance(v, dict)}
        print(f"[finetune] best dev {metric_name} {best_metric:.4f} at step {best_step}:\n{table}", file=sys.stderr)
    ckpt._write_json_atomic(run_dir / "summary.json", summary)
    return summary


# --------------------------------------------------------------------------------------------- loading


def load_finetuned(run_or_best, device="cpu", base_checkpoint: Optional[str] = None) -> tuple[Classifier, dict]:
    """(classifier in eval mode, finetune.json) from a fine-tuning run directory or its ``best/``."""
    from safetensors.torch import load_file

    path = Path(run_or_best)
    best = path / BEST_DIR if (path / BEST_DIR / META_FILE).is_file() else path
    if not (best / META_FILE).is_file():
        raise UserError(f"{path} holds no fine-tuned model ({BEST_DIR}/{META_FILE}): has the run evaluated once?")
    meta = json.loads((best / META_FILE).read_text())
    tensors = load_file(str(best / WEIGHTS_FILE))
    if meta["method"] == "lora":
        body, _, _, _ = load_body(base_checkpoint or meta["base_checkpoint"])
    else:
        body = GPT(GPTConfig.from_dict(meta["model"]))
    model = build_model(body, meta)
    view = TrainableView(model)
    expected = view.state_dict()
    missing, unexpected = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise UserError(f"{best / WEIGHTS_FILE} does not fit: missing {missing[:5]}, unexpected {unexpected[:5]}")
    view.load_state_dict(tensors)
    return model.to(device).eval(), meta


# --------------------------------------------------------------------------------------------- command line

_FLAGS = {  # flag -> (field, type, help)
    "--checkpoint": ("checkpoint", str, "pretrained run directory (latest step) or step directory"),
    "--task": ("task", str, "sst2 | wnut17 | jsonl:TRAIN[,DEV] | conll:TRAIN[,DEV]"),
    "--out": ("out", str, "fine-tuning run directory"),
    "--method": ("method", str, "full | lora"),
    "--lora-rank": ("lora_rank", int, "LoRA rank r"),
    "--lora-alpha": ("lora_alpha", float, "LoRA alpha (scale alpha/r)"),
    "--lora-dropout": ("lora_dropout", float, "dropout on the adapters' input"),
    "--lora-targets": ("lora_targets", str, "comma-separated Linear names to adapt (q_proj,k_proj,v_proj,o_proj,"
                                            "gate_proj,up_proj,down_proj)"),
    "--pooling": ("pooling", str, "sentence tasks: last | mean | first (default last for causal, mean for MLM)"),
    "--subword": ("subword", str, "token tasks: the sub-word labelled per word: first (BERT) | last (what a causal "
                                  "model has seen the whole word at)"),
    "--dropout": ("dropout", float, "dropout before the head"),
    "--max-length": ("max_length", int, "tokens per example (cut beyond)"),
    "--max-steps": ("max_steps", int, "optimizer steps"),
    "--batch-size": ("batch_size", int, "examples per step"),
    "--lr": ("lr", float, "peak learning rate (default 5e-5 full, 5e-4 lora)"),
    "--warmup-frac": ("warmup_frac", float, "fraction of steps warming up"),
    "--weight-decay": ("weight_decay", float, "AdamW weight decay on weight matrices"),
    "--grad-clip": ("grad_clip", float, "gradient-norm clip (0: off)"),
    "--eval-every": ("eval_every", int, "steps between dev evaluations"),
    "--patience": ("patience", int, "evaluations without improvement before stopping (0: never)"),
    "--ckpt-every": ("ckpt_every", int, "steps between checkpoints (0: every evaluation)"),
    "--keep-last": ("keep_last", int, "checkpoints kept (0: all)"),
    "--log-every": ("log_every", int, "steps between log lines"),
    "--limit-train": ("limit_train", int, "use N training examples (seeded sample)"),
    "--limit-dev": ("limit_dev", int, "use the first N dev examples"),
    "--data-dir": ("data_dir", str, "folder with sst2/ and wnut17/ (default $WEBREFINERY_DATA/finetune)"),
    "--device": ("device", str, "auto | cpu | cuda"),
    "--dtype": ("dtype", str, "auto | float32 | bfloat16"),
    "--seed": ("seed", int, "seed for the head, dropout and data order"),
    "--stop-at-step": ("stop_at_step", int, "checkpoint and stop at this step"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``refinery finetune`` (defaults None: FinetuneConfig decides)."""
    defaults = FinetuneConfig()
    for flag, (name, typ, text) in _FLAGS.items():
        kwargs: dict[str, Any] = {"type": typ, "default": None, "dest": name,
                                  "help": f"{text} (default: {getattr(defaults, name)})"}
        if name == "method":
            kwargs["choices"] = ["full", "lora"]
        elif name == "pooling":
            kwargs["choices"] = ["last", "mean", "first"]
        elif name == "subword":
            kwargs["choices"] = ["first", "last"]
        parser.add_argument(flag, **kwargs)
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None, dest="compile",
                        help="torch.compile the model (default: on for CUDA, off for CPU)")
    parser.add_argument("--resume", action="store_true", default=None, dest="resume",
                        help="continue the run in --out from its latest checkpoint")
    parser.add_argument("--no-progress", action="store_false", default=None, dest="progress")
    parser.add_argument("--export", default=None, metavar="DIR",
                        help="after training, export the best model as a Hugging Face Llama*Classification folder")


def config_from_args(args: argparse.Namespace) -> FinetuneConfig:
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(FinetuneConfig)
              if getattr(args, f.name, None) is not None}
    return FinetuneConfig(**values)


def run(args: argparse.Namespace) -> dict:
    """``refinery finetune``: train, print the summary, optionally export."""
    summary = finetune(config_from_args(args))
    if getattr(args, "export", None):
        from model.finetune.export import export_classifier

        summary["export"] = str(export_classifier(args.out, args.export))
    print(json.dumps({k: v for k, v in summary.items() if k != "history"}, indent=1))
    return summary
