"""The training loop: token shards -> GPT checkpoints, on CPU, one GPU, or many via torchrun.

Entry points: ``train(TrainConfig(...))`` from Python; ``add_arguments(parser)`` + ``run(args)`` for
the ``refinery pretrain`` command; ``python -m model.train ...`` (also under ``torchrun``).

What one optimizer step does: ``grad_accum`` micro-batches of ``batch_size`` sequences of
``block_size`` tokens per rank (global batch = batch_size x grad_accum x world_size sequences), bf16
autocast on CUDA (float32 master weights), gradient clipping, AdamW, then the learning rate for the
next step from the schedule.

Choices, stated:
* Weight decay applies to the weight matrices of the blocks (and to an untied ``lm_head``). Norm
  gains and the token embedding (tied to ``lm_head`` by default) are not decayed: decaying them
  pulls gains towards 0 and rare tokens' embeddings towards the origin, for no regularisation gain.
* Schedules: linear warmup over ``warmup`` steps from lr/warmup to ``lr``, then ``cosine`` decay to
  ``min_lr`` at ``max_steps``, or ``wsd`` (warmup-stable-decay): ``lr`` until the last ``decay_frac``
  of the steps, then linear decay to ``min_lr``.
* Defaults follow GPT-3 small: lr 6e-4, min_lr = lr/10, betas (0.9, 0.95), weight decay 0.1,
  clip 1.0.
* The vocabulary is padded up to a multiple of ``vocab_multiple`` (64) for faster matmuls; the padding
  ids never occur in the data. config.json records both sizes.
* Non-finite loss or gradient norm: ``nan_policy="skip"`` drops the update of that step (data and
  schedule still advance), counts it, and raises after ``max_bad_steps`` consecutive bad steps;
  ``"stop"`` raises at once, naming the step.
* MFU uses model/flops.py: 6N + 12 L d T FLOPs per token over the peak dense bf16 FLOP/s of the
  detected GPU (H100/H200/A100...); MFU is null on CPU or unknown devices (``peak_tflops`` overrides).
* Distributed: torchrun's RANK / WORLD_SIZE / LOCAL_RANK; gloo on CPU, nccl on CUDA. DDP by
  default; ``fsdp=True`` shards parameters, gradients and optimizer state with FSDP2 ``fully_shard``
  (per block, then the root), bf16 parameters / fp32 reductions on CUDA.
* Resume (``resume=True``): model, optimizer, step (hence schedule), data loader position and RNG
  states come back from the latest checkpoint, so an interrupted-then-resumed run reproduces the
  uninterrupted one (bit for bit on CPU in float32). log.jsonl is cut back to the checkpoint's step.
  SIGTERM (e.g. pre-emption) saves a checkpoint at the next step boundary and returns.

Mixtures (``tokens`` names a manifest from ``refinery mix``): windows are drawn from each source in
proportion to its share (model/data.py ``MixtureLoader``), deterministically from the seed and resumed
exactly; log.jsonl adds ``tokens_per_source`` and ``val_loss_per_source``, and ``val_loss`` is the
share-weighted mean of the sources' validation losses.

Run directory: config.json, tokenizer.json (copied from the token dir), log.jsonl (one JSON object
per logged step: step, loss, lr, tokens_per_s, mfu, grad_norm, tokens, and val_loss when measured),
checkpoints/step_*/ (model/checkpoint.py), summary.json (its tokens_per_s and mfu leave out the first step
of the process, which pays for torch.compile and warm-up; that step's time is ``first_step_s``).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch
import torch.nn as nn

from model.corridor.files import write_json_atomic, write_text_atomic
from model import checkpoint as ckpt
from model.data import TokenDataError, TokenMixture, WindowLoader, make_window_loader, open_training_data
from model.flops import flops_per_token, mfu, peak_flops_for_device
from model.gpt import GPT, GPTConfig, PRESETS, config_from_preset


class NonFiniteLossError(RuntimeError):
    """Training met a NaN/inf loss or gradient (policy "stop", or too many consecutive skips)."""


@dataclass
class TrainConfig:
    """Everything a training run needs; JSON/YAML config files hold these field names."""

    tokens: str = ""  # token-shard directory (train/, val/, manifest.json, tokenizer.json) or a mixture manifest
    out: str = ""  # run directory
    preset: str = "small"  # model shape: one of model.gpt.PRESETS
    model: dict = field(default_factory=dict)  # GPTConfig overrides, e.g. {"n_layer": 4}
    block_size: Optional[int] = None  # sequence length (None: the preset's)
    vocab_multiple: int = 64  # pad the vocabulary to a multiple of this
    max_steps: int = 1000
    batch_size: int = 8  # sequences per micro-batch per rank
    grad_accum: int = 1
    lr: float = 6e-4
    min_lr: Optional[float] = None  # None: lr / 10
    warmup: int = 100
    schedule: str = "cosine"  # cosine | wsd
    decay_frac: float = 0.2  # wsd: fraction of max_steps spent decaying
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    grad_clip: float = 1.0  # 0 disables clipping (the norm is still measured)
    eval_every: int = 250  # steps between val-loss measurements (0: only at the end)
    eval_steps: int = 20  # val micro-batches per measurement
    ckpt_every: int = 500  # steps between checkpoints (0: only at the end)
    keep_last: int = 3  # checkpoints kept (0: all)
    log_every: int = 10
    device: str = "auto"  # auto | cpu | cuda
    dtype: str = "auto"  # auto | float32 | bfloat16
    compile: Optional[bool] = None  # None: on for CUDA, off for CPU
    fsdp: bool = False
    seed: int = 1337
    nan_policy: str = "skip"  # skip | stop
    max_bad_steps: int = 5  # skip policy: consecutive non-finite steps before giving up
    prefetch: Optional[int] = None  # batches prepared ahead by a background thread (None: 2 on CUDA, 0 on CPU)
    resume: bool = False
    objective: str = "causal"  # causal | mlm (model/mlm.py: bidirectional attention, BERT's dynamic masking)
    mlm_prob: float = 0.15  # mlm: share of tokens selected for the loss (BERT)
    mlm_mask_frac: float = 0.8  # mlm: selected tokens shown as the mask token
    mlm_random_frac: float = 0.1  # mlm: selected tokens shown as a random token (the rest unchanged)
    stop_at_step: Optional[int] = None  # end early here (checkpointed), as a time-boxed job would
    peak_tflops: Optional[float] = None  # per-device peak for MFU when the GPU is not recognised
    progress: bool = True  # tqdm progress bar on rank 0

    def validate(self) -> None:
        if not self.tokens:
            raise ValueError("TrainConfig.tokens: the token-shard directory is required")
        if not self.out:
            raise ValueError("TrainConfig.out: the run directory is required")
        if self.preset not in PRESETS:
            raise ValueError(f"TrainConfig.preset {self.preset!r} is not one of {sorted(PRESETS)}")
        for key in ("max_steps", "batch_size", "grad_accum", "vocab_multiple", "eval_steps", "log_every"):
            if getattr(self, key) <= 0:
                raise ValueError(f"TrainConfig.{key} must be positive, got {getattr(self, key)}")
        for key in ("warmup", "eval_every", "ckpt_every", "keep_last", "prefetch", "weight_decay", "grad_clip"):
            if getattr(self, key) is not None and getattr(self, key) < 0:
                raise ValueError(f"TrainConfig.{key} must be >= 0, got {getattr(self, key)}")
        if self.lr <= 0 or (self.min_lr is not None and not 0 <= self.min_lr <= self.lr):
            raise ValueError(f"TrainConfig: need lr > 0 and 0 <= min_lr <= lr (lr={self.lr}, min_lr={self.min_lr})")
        if self.schedule not in ("cosine", "wsd"):
            raise ValueError(f"TrainConfig.schedule must be 'cosine' or 'wsd', got {self.schedule!r}")
        if not 0 < self.decay_frac <= 1:
            raise ValueError(f"TrainConfig.decay_frac must be in (0, 1], got {self.decay_frac}")
        if self.nan_policy not in ("skip", "stop"):
            raise ValueError(f"TrainConfig.nan_policy must be 'skip' or 'stop', got {self.nan_policy!r}")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ValueError(f"TrainConfig.device must be auto, cpu or cuda, got {self.device!r}")
        if self.dtype not in ("auto", "float32", "bfloat16"):
            raise ValueError(f"TrainConfig.dtype must be auto, float32 or bfloat16, got {self.dtype!r}")
        if self.objective not in ("causal", "mlm"):
            raise ValueError(f"TrainConfig.objective must be 'causal' or 'mlm', got {self.objective!r}")
        if self.objective == "mlm":
            from model.mlm import MaskingParams

            MaskingParams(self.mlm_prob, self.mlm_mask_frac, self.mlm_random_frac).validate()
        if self.max_bad_steps <= 0:
            raise ValueError("TrainConfig.max_bad_steps must be positive")
        unknown = set(self.model) - {f.name for f in dataclasses.fields(GPTConfig)} - {"vocab_size"}
        if unknown:
            raise ValueError(f"TrainConfig.model: unknown GPTConfig field(s) {sorted(unknown)}")
        if "vocab_size" in self.model:
            raise ValueError("TrainConfig.model: vocab_size comes from the token manifest, do not set it")

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown training config key(s) {unknown}; known: {sorted(known)}")
        return cls(**d)


def load_config_file(path) -> dict:
    """A JSON or YAML file of TrainConfig fields, as a dict."""
    path = Path(path)
    text = path.read_text()
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        data = yaml.safe_load(text)
    else:
        data = json.loads(text)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a training config must be a mapping of TrainConfig fields")
    return data


# ---------------------------------------------------------------------------------------------
# schedule, optimizer, environment


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate for the (0-based) optimizer step ``step``."""
    min_lr = cfg.lr / 10 if cfg.min_lr is None else cfg.min_lr
    if cfg.warmup > 0 and step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    if cfg.schedule == "cosine":
        span = max(1, cfg.max_steps - cfg.warmup)
        progress = min(1.0, (step - cfg.warmup) / span)
        return min_lr + 0.5 * (cfg.lr - min_lr) * (1.0 + math.cos(math.pi * progress))
    decay_start = cfg.max_steps - max(1, int(round(cfg.decay_frac * cfg.max_steps)))
    if step < decay_start:
        return cfg.lr
    progress = min(1.0, (step - decay_start + 1) / max(1, cfg.max_steps - decay_start))
    return cfg.lr + (min_lr - cfg.lr) * progress


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: decay on weight matrices (ndim >= 2) except the token embedding; none on the rest."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():  # tied parameters appear once
        if not p.requires_grad:
            continue
        if p.ndim >= 2 and not name.startswith("tok_emb"):
            decay.append(p)
        else:
            no_decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


@dataclass
class DistEnv:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    initialized_here: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed(device_kind: str) -> DistEnv:
    """Join torchrun's process group when WORLD_SIZE > 1 (gloo on CPU, nccl on CUDA)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistEnv()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    import torch.distributed as dist

    initialized_here = False
    if not dist.is_initialized():
        if device_kind == "cuda":
            torch.cuda.set_device(local)
        dist.init_process_group(backend="nccl" if device_kind == "cuda" else "gloo")
        initialized_here = True
    return DistEnv(rank=rank, local_rank=local, world_size=world, initialized_here=initialized_here)


def _all_reduce_mean(t: torch.Tensor, env: DistEnv) -> torch.Tensor:
    if env.world_size > 1:
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.SUM)
        t = t / env.world_size
    return t


def _resolve_device(cfg: TrainConfig) -> str:
    if cfg.device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but torch sees no CUDA device")
    return cfg.device.split(":")[0]


def _resolve_dtype(cfg: TrainConfig, device_kind: str) -> torch.dtype:
    if cfg.dtype == "auto":
        if device_kind == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16}[cfg.dtype]


class _LogFile:
    """Append-only JSON-lines log (rank 0 only)."""

    def __init__(self, path: Path, enabled: bool):
        self.path = path
        self.enabled = enabled

    def truncate_after(self, step: int) -> None:
        """Keep only records with step <= ``step`` (records past a resumed checkpoint are replayed)."""
        if not self.enabled or not self.path.is_file():
            return
        kept = []
        for line in self.path.read_text().splitlines():
            try:
                if json.loads(line).get("step", 0) <= step:
                    kept.append(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a crash
        write_text_atomic(self.path, "".join(l + "\n" for l in kept))

    def write(self, record: dict) -> None:
        if self.enabled:
            with open(self.path, "a") as f:
                f.write(json.dumps(record, allow_nan=True) + "\n")


class _SigtermFlag:
    """Sets ``raised`` on SIGTERM (main thread only), restoring the old handler on exit."""

    def __init__(self):
        self.raised = False
        self._old = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum, frame):
        self.raised = True

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGTERM, self._old)


# ---------------------------------------------------------------------------------------------
# the loop


def _resolve_model_config(cfg: TrainConfig, run_dir: Path, vocab_size: int, resuming: bool) -> GPTConfig:
    if resuming and (run_dir / "config.json").is_file():
        saved = json.loads((run_dir / "config.json").read_text()).get("model")
        if saved:
            return GPTConfig.from_dict(saved)
    needed = vocab_size + (1 if cfg.objective == "mlm" else 0)  # mlm: the mask token's id is vocab_size
    padded = cfg.vocab_multiple * math.ceil(needed / cfg.vocab_multiple)
    overrides = dict(cfg.model)
    if cfg.objective == "mlm":
        overrides["bidirectional"] = True
    if cfg.block_size is not None:
        overrides["block_size"] = cfg.block_size
    return config_from_preset(cfg.preset, padded, **overrides)


def _evaluate(model: nn.Module, loader: Optional[WindowLoader], steps: int, autocast, env: DistEnv) -> Optional[float]:
    if loader is None:
        return None
    loader.load_state_dict({"epoch": 0, "position": 0})  # the same val windows every time
    steps = min(steps, loader.rounds_per_epoch)
    model.eval()
    total = torch.zeros((), dtype=torch.float64)
    with torch.no_grad():
        for _ in range(steps):
            x, y = loader.next_batch()
            with autocast():
                _, loss = model(x, y)
            total += loss.detach().double().cpu()
    model.train()
    total = _all_reduce_mean((total / steps).to(loader.device), env)
    return float(total)


def _evaluate_sources(model: nn.Module, loaders: dict, weights: dict, steps: int, autocast,
                      env: DistEnv) -> tuple[Optional[float], dict]:
    """(val loss, {source: val loss}); over a mixture the overall loss is the share-weighted mean."""
    losses = {name: _evaluate(model, ld, steps, autocast, env) for name, ld in loaders.items()}
    if not losses:
        return None, {}
    total = sum(weights[n] for n in losses)
    return sum(weights[n] * v for n, v in losses.items()) / total, losses


def train(cfg: TrainConfig) -> dict:
    """Train (or resume) a GPT on token shards; return a summary (also written to run/summary.json)."""
    cfg.validate()
    device_kind = _resolve_device(cfg)
    env = setup_distributed(device_kind)
    try:
        return _train(cfg, device_kind, env)
    finally:
        if env.initialized_here:
            torch.distributed.destroy_process_group()


def _train(cfg: TrainConfig, device_kind: str, env: DistEnv) -> dict:
    from tqdm import tqdm

    tokens_dir, run_dir = Path(cfg.tokens), Path(cfg.out)
    device = torch.device(f"cuda:{env.local_rank}" if device_kind == "cuda" else "cpu")
    dtype = _resolve_dtype(cfg, device_kind)
    use_compile = (device_kind == "cuda") if cfg.compile is None else cfg.compile
    if device_kind == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    # ---- run directory and resume decision
    latest = ckpt.latest_checkpoint(run_dir) if run_dir.is_dir() else None
    if latest is not None and not cfg.resume:
        raise FileExistsError(f"{run_dir} already holds checkpoints (latest {latest.name}); "
                              "pass --resume to continue it or choose another --out")
    resuming = latest is not None
    if env.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
    log = _LogFile(run_dir / "log.jsonl", env.is_main)

    # ---- data: one token set, or a mixture of several (model/data.py)
    train_shards, val_splits = open_training_data(tokens_dir)
    mixture = train_shards if isinstance(train_shards, TokenMixture) else None
    model_cfg = _resolve_model_config(cfg, run_dir, train_shards.vocab_size, resuming)
    if model_cfg.vocab_size < train_shards.vocab_size:
        raise ValueError(f"model vocab {model_cfg.vocab_size} < token vocab {train_shards.vocab_size}")
    block = model_cfg.block_size
    loader = make_window_loader(train_shards, block, cfg.batch_size, rank=env.rank, world_size=env.world_size,
                                seed=cfg.seed, shuffle=True, device=device,
                                prefetch=cfg.prefetch if cfg.prefetch is not None else (2 if device_kind == "cuda" else 0))
    val_loaders: dict[str, WindowLoader] = {}  # per source ("" for a single token set)
    for name, val_shards in val_splits.items():
        try:
            val_loaders[name] = WindowLoader(val_shards, block, cfg.batch_size, rank=env.rank,
                                             world_size=env.world_size, seed=cfg.seed, shuffle=False, device=device)
        except TokenDataError as e:
            if env.is_main:
                print(f"[train] no validation loss{f' for {name}' if name else ''}: {e}", file=sys.stderr)
    if not val_loaders and env.is_main:
        print(f"[train] no validation loss: no usable val split under {tokens_dir}", file=sys.stderr)
    val_weights = {n: mixture.shares[mixture.names.index(n)] if mixture else 1.0 for n in val_loaders}

    if cfg.objective == "mlm":  # the same windows, masked afresh each time one is drawn (model/mlm.py)
        from model.mlm import MaskedWindows, MaskingParams

        mparams = MaskingParams(cfg.mlm_prob, cfg.mlm_mask_frac, cfg.mlm_random_frac)

        def wrap(ld):
            return MaskedWindows(ld, train_shards.vocab_size, train_shards.vocab_size, mparams, cfg.seed, env.rank,
                                 special_ids=[train_shards.eot_id])

        loader = wrap(loader)
        val_loaders = {name: wrap(ld) for name, ld in val_loaders.items()}

    # ---- model, wrappers, optimizer
    torch.manual_seed(cfg.seed)
    raw = GPT(model_cfg).to(device)
    mlm_meter = None
    if cfg.objective == "mlm":
        from model.mlm import MaskedAccuracy

        mlm_meter = MaskedAccuracy(raw)
    model: nn.Module = raw
    mixed_by_fsdp = False
    if cfg.fsdp and env.world_size > 1:
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        mp = MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=torch.float32) if dtype != torch.float32 else None
        kwargs = {"mp_policy": mp} if mp is not None else {}
        for blk in raw.blocks:
            fully_shard(blk, **kwargs)
        fully_shard(raw, **kwargs)
        mixed_by_fsdp = mp is not None
    if use_compile:
        model = torch.compile(model)
    if env.world_size > 1 and not cfg.fsdp:
        from torch.nn.parallel import DistributedDataParallel as DDP

        model = DDP(model, device_ids=[env.local_rank] if device_kind == "cuda" else None)
    optimizer = torch.optim.AdamW(param_groups(raw, cfg.weight_decay), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2),
                                  eps=cfg.eps, **({"fused": True} if device_kind == "cuda" and not cfg.fsdp else {}))

    def autocast():
        if dtype == torch.float32 or mixed_by_fsdp:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device_kind, dtype=dtype)

    start_step, skipped_total, bad_streak, tokens_seen = 0, 0, 0, 0
    if resuming:
        state = ckpt.load_checkpoint(latest, model, optimizer)
        start_step = int(state["step"])
        loader.load_state_dict(state["data"])
        ckpt.restore_rng_states(state.get("rng") or {})
        extra = state.get("extra") or {}
        skipped_total = int(extra.get("skipped_steps", 0))
        bad_streak = int(extra.get("bad_streak", 0))
        tokens_seen = int(extra.get("tokens_seen", 0))
        log.truncate_after(start_step)
        if env.is_main:
            print(f"[train] resumed from {latest} at step {start_step}", file=sys.stderr)
    elif env.is_main and (run_dir / "log.jsonl").exists():
        (run_dir / "log.jsonl").unlink()  # a run that died before its first checkpoint

    n_params = raw.num_params(non_embedding=False) if not cfg.fsdp else sum(
        p.numel() for p in raw.parameters())
    fpt = flops_per_token(model_cfg)
    peak = cfg.peak_tflops * 1e12 if cfg.peak_tflops else (
        peak_flops_for_device(torch.cuda.get_device_name(device)) if device_kind == "cuda" else None)
    tokens_per_step = cfg.batch_size * cfg.grad_accum * env.world_size * block
    run_config = {"train": dataclasses.asdict(cfg), "world_size": env.world_size,
                  "data": {"tokens": str(tokens_dir), "vocab_size": train_shards.vocab_size,
                           "eot_id": train_shards.eot_id, "train_tokens": train_shards.total_tokens,
                           **({"mixture": mixture.manifest["sources"]} if mixture else {})},
                  "flops_per_token": fpt, "flop_formula": "6*N + 12*n_layer*n_embd*block_size"}
    if cfg.objective == "mlm":
        run_config["mlm"] = {"mask_id": train_shards.vocab_size, "mask_token": "<|mask|>", "prob": cfg.mlm_prob,
                             "mask_frac": cfg.mlm_mask_frac, "random_frac": cfg.mlm_random_frac}
    if env.is_main:
        ckpt.write_run_config(run_dir, run_config, model_cfg.to_dict())
        tok_json = mixture.tokenizer_path if mixture else tokens_dir / "tokenizer.json"
        if tok_json is not None and tok_json.is_file():
            shutil.copyfile(tok_json, run_dir / "tokenizer.json")
        if cfg.objective == "mlm" and (run_dir / "tokenizer.json").is_file():
            from model.mlm import add_mask_token

            add_mask_token(run_dir / "tokenizer.json", train_shards.vocab_size)
        print(f"[train] {n_params / 1e6:.2f}M parameters, {tokens_per_step:,} tokens/step, world {env.world_size}, "
              f"device {device}, dtype {str(dtype).replace('torch.', '')}, compile {use_compile}, "
              f"{loader.rounds_per_epoch // cfg.grad_accum} steps/epoch", file=sys.stderr)

    def save(step: int) -> Path:
        extra = {"skipped_steps": skipped_total, "bad_streak": bad_streak, "tokens_seen": tokens_seen}
        path = ckpt.save_checkpoint(run_dir, step, model, optimizer, scheduler_state={"step": step,
                                    "lr_next": lr_at(step, cfg)}, data_state=loader.state_dict(), extra=extra,
                                    run_config=run_config)
        if env.is_main and cfg.keep_last:
            ckpt.prune_checkpoints(run_dir, cfg.keep_last)
        return path

    end_step = cfg.max_steps if cfg.stop_at_step is None else min(cfg.max_steps, cfg.stop_at_step)
    bar = tqdm(total=cfg.max_steps, initial=start_step, disable=not (cfg.progress and env.is_main),
               dynamic_ncols=True, mininterval=1.0, desc="train")
    params = [p for p in raw.parameters() if p.requires_grad]
    last_loss = last_val = last_mfu = None
    last_ckpt: Optional[Path] = latest
    interrupted = False
    window_t0, window_tokens, paused = time.perf_counter(), 0, 0.0
    run_t0, run_tokens, run_paused = time.perf_counter(), 0, 0.0
    first_step_s = None
    step = start_step
    model.train()
    with _SigtermFlag() as sigterm:
        while step < end_step:
            lr = lr_at(step, cfg)
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss_sum = torch.zeros((), device=device)
            for micro in range(cfg.grad_accum):
                last_micro = micro == cfg.grad_accum - 1
                x, y = loader.next_batch()
                sync = contextlib.nullcontext()
                if isinstance(model, torch.nn.parallel.DistributedDataParallel) and not last_micro:
                    sync = model.no_sync()
                if hasattr(raw, "set_requires_gradient_sync") and cfg.fsdp and env.world_size > 1:
                    raw.set_requires_gradient_sync(last_micro)
                with sync:
                    with autocast():
                        _, loss = model(x, y)
                    (loss / cfg.grad_accum).backward()
                loss_sum += loss.detach().float()
            grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip if cfg.grad_clip > 0 else float("inf"))
            if hasattr(grad_norm, "full_tensor"):
                grad_norm = grad_norm.full_tensor()
            flag = torch.tensor(1.0 if sigterm.raised else 0.0, device=device)
            stats = _all_reduce_mean(torch.stack([loss_sum / cfg.grad_accum, grad_norm.float().to(device), flag]), env)
            loss_val, norm_val, flag_val = (float(v) for v in stats.tolist())
            sigterm.raised = flag_val > 0  # any rank signalled: all stop together
            finite = math.isfinite(loss_val) and math.isfinite(norm_val)
            step += 1
            tokens_seen += tokens_per_step
            window_tokens += tokens_per_step
            run_tokens += tokens_per_step
            if finite:
                optimizer.step()
                bad_streak = 0
            else:
                skipped_total += 1
                bad_streak += 1
                if cfg.nan_policy == "stop":
                    optimizer.zero_grad(set_to_none=True)
                    raise NonFiniteLossError(f"non-finite loss/gradient at step {step} (loss {loss_val}, "
                                             f"grad norm {norm_val}); nan_policy=stop")
                if bad_streak >= cfg.max_bad_steps:
                    raise NonFiniteLossError(f"{bad_streak} consecutive non-finite steps ending at step {step} "
                                             f"(nan_policy=skip, max_bad_steps={cfg.max_bad_steps})")
            optimizer.zero_grad(set_to_none=True)
            last_loss = loss_val if finite else last_loss

            step_end = time.perf_counter()  # throughput excludes eval and checkpoint time
            do_eval = bool(val_loaders) and (
                (cfg.eval_every and step % cfg.eval_every == 0) or step == cfg.max_steps)
            do_log = step % cfg.log_every == 0 or step == end_step or do_eval or not finite
            val_loss, val_per_source = _evaluate_sources(model, val_loaders, val_weights, cfg.eval_steps, autocast,
                                                         env) if do_eval else (None, {})
            if val_loss is not None:
                last_val = val_loss
            if do_log:
                tps = window_tokens / max(step_end - window_t0 - paused, 1e-9)
                last_mfu = mfu(tps, fpt, peak, env.world_size)
                record = {"step": step, "loss": loss_val, "lr": lr, "tokens_per_s": tps, "mfu": last_mfu,
                          "grad_norm": norm_val, "tokens": tokens_seen}
                if not finite:
                    record["skipped"] = True
                if val_loss is not None:
                    record["val_loss"] = val_loss
                if mlm_meter is not None:
                    record.update(mlm_meter.log_fields(val_loss is not None))
                if mixture is not None:
                    record["tokens_per_source"] = loader.tokens_per_source()
                    if val_per_source:
                        record["val_loss_per_source"] = val_per_source
                log.write(record)
                bar.set_postfix(loss=f"{loss_val:.4f}", lr=f"{lr:.2e}", tok_s=f"{tps:,.0f}",
                                mfu="-" if last_mfu is None else f"{100 * last_mfu:.1f}%", refresh=False)
                if val_loss is not None and env.is_main:
                    bar.write(f"step {step}: loss {loss_val:.4f} val_loss {val_loss:.4f}")
                window_t0, window_tokens, paused = step_end, 0, 0.0
            bar.update(1)
            stop_now = sigterm.raised or step == end_step
            if (cfg.ckpt_every and step % cfg.ckpt_every == 0) or stop_now:
                last_ckpt = save(step)
            pause = time.perf_counter() - step_end
            paused += pause
            run_paused += pause
            if step == start_step + 1:
                # the first step of a process pays for torch.compile and kernel warm-up: report it apart
                first_step_s = step_end - run_t0
                if step < end_step:
                    run_t0, run_tokens, run_paused = time.perf_counter(), 0, 0.0
            if sigterm.raised:
                interrupted = True
                break
    bar.close()
    loader.close()
    elapsed = time.perf_counter() - run_t0 - run_paused
    run_tps = run_tokens / elapsed if elapsed > 0 else 0.0
    summary = {
        "run_dir": str(run_dir), "start_step": start_step, "steps": step, "max_steps": cfg.max_steps,
        "final_loss": last_loss, "val_loss": last_val, "tokens_seen": tokens_seen,
        "tokens_per_s": run_tps, "mfu": mfu(run_tps, fpt, peak, env.world_size), "first_step_s": first_step_s,
        "skipped_steps": skipped_total,
        "params": n_params, "flops_per_token": fpt, "world_size": env.world_size,
        "checkpoint": str(last_ckpt) if last_ckpt else None, "interrupted": interrupted,
        "finished": step >= cfg.max_steps,
    }
    if env.is_main:
        write_json_atomic(run_dir / "summary.json", summary)
    return summary


# ---------------------------------------------------------------------------------------------
# command line

_CLI_FIELDS = {  # flag -> (TrainConfig field, type, help)
    "--tokens": ("tokens", str, "token-shard directory (train/, val/, manifest.json, tokenizer.json), or a "
                                "mixture manifest from `refinery mix`"),
    "--out": ("out", str, "run directory (checkpoints, log.jsonl, config.json)"),
    "--preset": ("preset", str, f"model shape: {', '.join(PRESETS)}"),
    "--block-size": ("block_size", int, "sequence length (default: the preset's)"),
    "--max-steps": ("max_steps", int, "optimizer steps"),
    "--batch-size": ("batch_size", int, "sequences per micro-batch per rank"),
    "--grad-accum": ("grad_accum", int, "micro-batches per optimizer step"),
    "--lr": ("lr", float, "peak learning rate"),
    "--min-lr": ("min_lr", float, "final learning rate (default lr/10)"),
    "--warmup": ("warmup", int, "linear warmup steps"),
    "--schedule": ("schedule", str, "cosine | wsd"),
    "--decay-frac": ("decay_frac", float, "wsd: fraction of steps spent decaying"),
    "--weight-decay": ("weight_decay", float, "AdamW weight decay on weight matrices"),
    "--grad-clip": ("grad_clip", float, "gradient-norm clip (0: off)"),
    "--eval-every": ("eval_every", int, "steps between val-loss measurements"),
    "--eval-steps": ("eval_steps", int, "val micro-batches per measurement"),
    "--ckpt-every": ("ckpt_every", int, "steps between checkpoints"),
    "--keep-last": ("keep_last", int, "checkpoints kept (0: all)"),
    "--log-every": ("log_every", int, "steps between log lines"),
    "--device": ("device", str, "auto | cpu | cuda"),
    "--dtype": ("dtype", str, "auto | float32 | bfloat16"),
    "--seed": ("seed", int, "seed for init and data order"),
    "--nan-policy": ("nan_policy", str, "skip | stop"),
    "--max-bad-steps": ("max_bad_steps", int, "skip policy: consecutive bad steps before stopping"),
    "--prefetch": ("prefetch", int, "batches prefetched by a background thread"),
    "--stop-at-step": ("stop_at_step", int, "checkpoint and stop at this step (time-boxed jobs)"),
    "--objective": ("objective", str, "causal (next token) | mlm (masked tokens, bidirectional; model/mlm.py)"),
    "--mlm-prob": ("mlm_prob", float, "mlm: share of tokens selected"),
    "--mlm-mask-frac": ("mlm_mask_frac", float, "mlm: selected tokens shown as the mask token"),
    "--mlm-random-frac": ("mlm_random_frac", float, "mlm: selected tokens shown as a random token"),
    "--peak-tflops": ("peak_tflops", float, "per-device peak TFLOP/s for MFU on unrecognised GPUs"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the trainer's flags to ``parser`` (every default is None: TrainConfig/--config decide)."""
    defaults = TrainConfig()
    parser.add_argument("--config", help="JSON or YAML file of TrainConfig fields (flags override it)")
    for flag, (name, typ, text) in _CLI_FIELDS.items():
        kwargs: dict[str, Any] = {"type": typ, "default": None, "dest": name,
                                  "help": f"{text} (default: {getattr(defaults, name)})"}
        if name == "schedule":
            kwargs["choices"] = ["cosine", "wsd"]
        elif name == "nan_policy":
            kwargs["choices"] = ["skip", "stop"]
        elif name == "dtype":
            kwargs["choices"] = ["auto", "float32", "bfloat16"]
        elif name == "objective":
            kwargs["choices"] = ["causal", "mlm"]
        elif name == "preset":
            kwargs["choices"] = sorted(PRESETS)
        parser.add_argument(flag, **kwargs)
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None, dest="compile",
                        help="torch.compile the model (default: on for CUDA, off for CPU)")
    parser.add_argument("--fsdp", action=argparse.BooleanOptionalAction, default=None, dest="fsdp",
                        help="shard with FSDP2 under torchrun instead of DDP (default: off)")
    parser.add_argument("--resume", action="store_true", default=None, dest="resume",
                        help="continue the run in --out from its latest checkpoint (fresh start if it has none)")
    parser.add_argument("--no-progress", action="store_false", default=None, dest="progress",
                        help="no tqdm progress bar")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """TrainConfig from defaults < --config file < explicit flags."""
    values: dict[str, Any] = {}
    if getattr(args, "config", None):
        values.update(load_config_file(args.config))
    field_names = {f.name for f in dataclasses.fields(TrainConfig)}
    for name in field_names:
        v = getattr(args, name, None)
        if v is not None:
            values[name] = v
    return TrainConfig.from_dict(values)


def run(args: argparse.Namespace) -> dict:
    """Run training from parsed command-line arguments; return the summary."""
    summary = train(config_from_args(args))
    if summary.get("run_dir") and int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps({k: summary[k] for k in ("steps", "final_loss", "val_loss", "tokens_per_s", "mfu",
                                                  "skipped_steps", "checkpoint")}, indent=1))
    return summary


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model.train", description=__doc__.split("\n")[0])
    add_arguments(parser)
    run(parser.parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
