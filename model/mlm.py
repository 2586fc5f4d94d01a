"""The masked-language-model objective (BERT, Devlin et al. 2019) on the same model body.

``refinery pretrain --objective mlm`` trains ``model/gpt.py``'s GPT with ``bidirectional=True``
(every token attends to every other; same weights, same parameter names) on the same windows, loader,
checkpoints, resume and DDP/FSDP paths as the causal objective. What changes:

* Dynamic masking, drawn afresh each time a window is drawn: each token (except end-of-text) is
  selected with probability ``mlm_prob`` (15%); a selected token becomes the mask token with
  probability ``mlm_mask_frac`` (80%), a uniformly random data token with ``mlm_random_frac`` (10%),
  or stays unchanged (the remaining 10%). The loss is the cross-entropy on selected tokens only.
  The random draws of each window are seeded by the run's seed, the loader's position (its
  ``state_dict()`` before the batch, the same on every rank) and the window's slot in the round
  (``rank * batch_size + row``), so a resumed run masks exactly as an uninterrupted one, two DDP ranks
  with batch B mask exactly as one process with batch 2B, and the validation windows get the same
  masks at every evaluation.
* The mask token: id ``V`` where ``V`` is the data's vocabulary size (the first id no token shard
  contains; the model's embedding table is padded to cover it). The run's copy of tokenizer.json
  gains ``<|mask|>`` as an added special token, which tokenizers numbers ``V`` (the next free id),
  so no existing token's id changes and the token shards stay valid. config.json records
  ``mlm.mask_id``.
* log.jsonl adds ``mlm_acc`` (masked-token accuracy of the step's micro-batches) and, when measured,
  ``val_mlm_acc``; ``loss``/``val_loss`` are the masked-token losses.

Evaluation (``refinery eval`` on such a checkpoint, ``--tasks mlm``): masked-token accuracy and loss
on held-out text with the same masking (seeded), and pseudo-perplexity (Salazar et al. 2020): every
token is masked in turn, PPPL = exp(-mean log p(token | all others)). The zero-shot tasks and bits per
byte score next-token probabilities, which a bidirectional model does not define: they are refused.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from model.errors import UserValueError

MASK_TOKEN = "<|mask|>"
IGNORE_INDEX = -100
MLM_TASKS = ("mlm",)


@dataclass
class MaskingParams:
    """BERT's masking rates (defaults from Devlin et al. 2019, section 3.1)."""

    prob: float = 0.15
    mask_frac: float = 0.8
    random_frac: float = 0.1

    def validate(self) -> None:
        if not 0 < self.prob < 1:
            raise UserValueError(f"mlm_prob must be in (0, 1), got {self.prob}")
        if self.mask_frac < 0 or self.random_frac < 0 or self.mask_frac + self.random_frac > 1:
            raise UserValueError("mlm_mask_frac and mlm_random_frac must be >= 0 and sum to at most 1")


def mask_tokens(x: torch.Tensor, mask_id: int, vocab_size: int, params: MaskingParams, generator,
                special_ids: Sequence[int] = ()) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, labels) for a batch of token ids ``x`` (B, T): labels are -100 except on selected tokens.

    ``generator`` is one ``torch.Generator`` for the batch, or one per row (then a row's mask depends
    only on its own generator, whatever batch it sits in)."""
    xc = x.to("cpu")
    if isinstance(generator, torch.Generator):
        probs = torch.rand(xc.shape, generator=generator)
        r = torch.rand(xc.shape, generator=generator)
        random_ids = torch.randint(vocab_size, xc.shape, generator=generator)
    else:
        if len(generator) != xc.shape[0]:
            raise ValueError("need one generator per row")
        rows = [(torch.rand(xc.shape[1:], generator=g), torch.rand(xc.shape[1:], generator=g),
                 torch.randint(vocab_size, xc.shape[1:], generator=g)) for g in generator]
        probs, r, random_ids = (torch.stack([row[i] for row in rows]) for i in range(3))
    eligible = torch.ones_like(xc, dtype=torch.bool)
    for s in special_ids:
        eligible &= xc != s
    selected = (probs < params.prob) & eligible
    if not selected.any() and eligible.any():  # never a batch without a target (the loss would be NaN)
        selected.view(-1)[int(eligible.view(-1).nonzero()[0])] = True
    to_mask = selected & (r < params.mask_frac)
    to_random = selected & (r >= params.mask_frac) & (r < params.mask_frac + params.random_frac)
    inputs = xc.clone()
    inputs[to_mask] = mask_id
    inputs[to_random] = random_ids[to_random]
    labels = torch.where(selected, xc, torch.full_like(xc, IGNORE_INDEX))
    return inputs.to(x.device), labels.to(x.device)


def seeded_generator(*keys) -> torch.Generator:
    """A CPU generator seeded from any JSON-able keys."""
    digest = hashlib.sha256(json.dumps(keys, sort_keys=True, default=str).encode()).digest()
    g = torch.Generator()
    g.manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))
    return g


class MaskedWindows:
    """Wraps a window loader: ``next_batch()`` returns (masked window, labels) instead of (x, y).

    Everything else (state_dict, load_state_dict, close, rounds_per_epoch, ...) is the wrapped
    loader's, so checkpoints and resume are unchanged."""

    def __init__(self, loader, mask_id: int, vocab_size: int, params: MaskingParams, seed: int, rank: int,
                 special_ids: Sequence[int] = ()):
        self._loader = loader
        self.mask_id, self.vocab_size, self.params = mask_id, vocab_size, params
        self.seed, self.rank, self.special_ids = seed, rank, tuple(special_ids)

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        where = self._loader.state_dict()  # the position of the batch about to be handed out (rank-free)
        x, _ = self._loader.next_batch()
        first = self.rank * x.shape[0]  # this rank's first slot in the round
        gens = [seeded_generator("mlm", self.seed, where, first + i) for i in range(x.shape[0])]
        return mask_tokens(x, self.mask_id, self.vocab_size, self.params, gens, self.special_ids)

    def __iter__(self):
        while True:
            yield self.next_batch()

    def __getattr__(self, name):
        return getattr(self._loader, name)


class MaskedAccuracy:
    """Counts correct predictions on masked positions from the model's forward (a forward hook),
    separately for training and evaluation mode; ``read()`` returns and resets them."""

    def __init__(self, model: nn.Module):
        self._counts = {True: [0, 0], False: [0, 0]}
        self._handle = model.register_forward_hook(self._hook)

    @torch.compiler.disable  # counted eagerly, outside any compiled graph
    def _hook(self, module, args, output):
        if len(args) < 2 or args[1] is None:
            return
        logits, targets = output[0], args[1]
        with torch.no_grad():
            keep = targets != IGNORE_INDEX
            hits = (logits.argmax(-1) == targets) & keep
            c = self._counts[module.training]
            c[0] += int(hits.sum())
            c[1] += int(keep.sum())

    def read(self, training: bool) -> Optional[float]:
        hits, total = self._counts[training]
        self._counts[training] = [0, 0]
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            t = torch.tensor([hits, total], dtype=torch.float64,
                             device="cuda" if torch.cuda.is_available() and torch.distributed.get_backend() == "nccl"
                             else "cpu")
            torch.distributed.all_reduce(t)
            hits, total = t.tolist()
        return hits / total if total else None

    def log_fields(self, has_val: bool) -> dict:
        out = {"mlm_acc": self.read(True)}
        if has_val:
            out["val_mlm_acc"] = self.read(False)
        return out


def add_mask_token(tokenizer_json: Path, data_vocab: int) -> int:
    """Give the run's tokenizer.json a ``<|mask|>`` special token numbered ``data_vocab``; returns the mask id.

    Existing ids never change (the token is appended). A tokenizer that already has the token keeps it;
    one that tokenizers cannot read, or whose size differs from the data's vocabulary, is left as it is
    (the mask id is still ``data_vocab``, recorded in config.json)."""
    from tokenizers import AddedToken, Tokenizer

    try:
        tok = Tokenizer.from_file(str(tokenizer_json))
    except Exception:
        return data_vocab
    existing = tok.token_to_id(MASK_TOKEN)
    if existing is not None:
        return existing
    if tok.get_vocab_size(with_added_tokens=True) != data_vocab:
        return data_vocab
    tok.add_special_tokens([AddedToken(MASK_TOKEN, special=True, normalized=False)])
    if tok.token_to_id(MASK_TOKEN) != data_vocab:  # pragma: no cover - tokenizers numbers added tokens next
        raise UserValueError(f"{tokenizer_json}: could not add {MASK_TOKEN} as id {data_vocab}")
    tok.save(str(tokenizer_json))
    return data_vocab


def mask_id_of(run_dir: Path, tokenizer=None) -> int:
    """The mask id of an MLM run: config.json's ``mlm.mask_id``, else the tokenizer's ``<|mask|>``."""
    cfg_path = Path(run_dir) / "config.json"
    if cfg_path.is_file():
        mlm = json.loads(cfg_path.read_text()).get("mlm") or {}
        if "mask_id" in mlm:
            return int(mlm["mask_id"])
    if tokenizer is not None and tokenizer.token_to_id(MASK_TOKEN) is not None:
        return int(tokenizer.token_to_id(MASK_TOKEN))
    raise UserValueError(f"{run_dir}: no mask id in config.json and no {MASK_TOKEN} in the tokenizer")


# ------------------------------------------------------------------------------------------ evaluation


def refuse_causal_tasks(tasks: Sequence[str]) -> None:
    bad = [t for t in tasks if t not in MLM_TASKS]
    if bad:
        raise UserValueError(
            f"task(s) {', '.join(bad)} score next-token probabilities (causal-only), but this checkpoint was "
            f"pretrained with --objective mlm (bidirectional attention): use --tasks mlm (masked-token accuracy "
            f"and pseudo-perplexity)")


def _windows(tokens: np.ndarray, length: int) -> list[np.ndarray]:
    return [tokens[i:i + length] for i in range(0, len(tokens) - 1, length) if len(tokens[i:i + length]) > 1]


def evaluate_mlm(model, token_ids: Sequence[int], mask_id: int, data_vocab: int, special_ids: Sequence[int] = (),
                 window: Optional[int] = None, batch_size: int = 16, seed: int = 0, pppl_max_tokens: int = 2048,
                 device="cpu") -> dict:
    """Masked-token accuracy and loss (BERT masking, seeded) over ``token_ids`` cut into windows, and
    pseudo-perplexity over the first ``pppl_max_tokens`` tokens (one forward per token, batched)."""
    model.eval()
    window = window or model.config.block_size
    arr = np.asarray(token_ids, dtype=np.int64)
    wins = _windows(arr, window)
    if not wins:
        raise UserValueError("held-out text too short for masked-LM evaluation")
    hits = total = 0
    nll = 0.0
    params = MaskingParams()
    with torch.no_grad():
        for i, w in enumerate(wins):
            x = torch.from_numpy(w)[None].to(device)
            inputs, labels = mask_tokens(x, mask_id, data_vocab, params, seeded_generator("mlm-eval", seed, i),
                                         special_ids)
            logits, _ = model(inputs)
            keep = labels != IGNORE_INDEX
            hits += int(((logits.argmax(-1) == labels) & keep).sum())
            total += int(keep.sum())
            nll += float(F.cross_entropy(logits[keep], labels[keep], reduction="sum"))
        # pseudo-perplexity: mask each position of each window in turn
        pl_sum, pl_n = 0.0, 0
        special = set(int(s) for s in special_ids)
        for w in wins:
            if pl_n >= pppl_max_tokens:
                break
            positions = [p for p in range(len(w)) if int(w[p]) not in special][: pppl_max_tokens - pl_n]
            for start in range(0, len(positions), batch_size):
                pos = positions[start:start + batch_size]
                x = torch.from_numpy(np.repeat(w[None], len(pos), axis=0)).to(device)
                rows = torch.arange(len(pos), device=device)
                cols = torch.tensor(pos, device=device)
                x[rows, cols] = mask_id
                logits, _ = model(x)
                logp = torch.log_softmax(logits[rows, cols].float(), -1)
                pl_sum += float(logp[rows, torch.from_numpy(w[pos]).to(device)].sum())
                pl_n += len(pos)
    return {"masked_acc": hits / total if total else float("nan"), "masked_loss": nll / total if total else float("nan"),
            "masked_tokens": total, "pseudo_ppl": math.exp(-pl_sum / pl_n) if pl_n else float("nan"),
            "pppl_tokens": pl_n, "n": len(wins)}


def run_mlm_eval(args, model, config, tokenizer_json: str, step_dir: Path) -> dict:
    """``refinery eval`` for an MLM checkpoint: ``--tasks mlm`` on ``--text`` (default WikiText-2 raw test);
    returns the results (the eval command writes and prints them as for a causal checkpoint)."""
    from tokenizers import Tokenizer

    from model.evaluate.tasks import DEFAULT_BPB_TEXT, local_task_dir

    requested = [t.strip() for t in str(args.tasks).split(",") if t.strip()]
    from model.evaluate.cli import DEFAULT_TASKS

    if args.tasks == DEFAULT_TASKS:  # the causal default was not asked for: use the MLM task
        requested = ["mlm"]
    refuse_causal_tasks(requested)
    tok = Tokenizer.from_file(tokenizer_json)
    run_dir = step_dir.parent.parent if step_dir.parent.name == "checkpoints" else step_dir
    mask_id = mask_id_of(run_dir, tok)
    run_cfg = json.loads((run_dir / "config.json").read_text()) if (run_dir / "config.json").is_file() else {}
    data_vocab = int((run_cfg.get("data") or {}).get("vocab_size") or mask_id)
    eot = (run_cfg.get("data") or {}).get("eot_id")
    path = Path(args.text) if args.text else Path(local_task_dir(args.data_dir, ["bpb"])) / DEFAULT_BPB_TEXT
    text = path.read_text(encoding="utf-8")
    ids = tok.encode(text, add_special_tokens=False).ids
    if args.max_tokens:
        ids = ids[: args.max_tokens]
    device = next(model.parameters()).device
    return {"mlm": {**evaluate_mlm(model, ids, mask_id, data_vocab, [eot] if eot is not None else [],
                                   batch_size=args.batch_size, device=device), "source": str(path)}}
