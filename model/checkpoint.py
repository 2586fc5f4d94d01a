"""Training checkpoints: safetensors + JSON only (nothing is ever unpickled), atomic, checksummed.

Layout of a run directory::

    run_dir/config.json                      {"model": GPTConfig.to_dict(), ...run-level settings}
    run_dir/tokenizer.json                   copied there by the trainer
    run_dir/checkpoints/step_00001000/
        model.safetensors                    the model's state_dict (``lm_head.weight`` left out when
                                             tied to ``tok_emb.weight``); names as in model/gpt.py
        optimizer.safetensors                every tensor of the optimizer state, flattened
        state.json                           step, model config, scheduler / data loader / RNG state,
                                             extra, the optimizer state's non-tensor skeleton, the
                                             sha256 and size of each tensor file, and its own checksum

A step directory is written under a temporary name and renamed into place (``model/corridor/files.py``'s
``atomic_dir``, which also gives every file the umask's mode: safetensors alone would leave the tensor
files 0600), so a directory named ``step_*`` that holds ``state.json`` is always complete; the latest checkpoint is the
highest such step. ``load_checkpoint`` verifies every checksum before it touches the model: a
tampered or truncated file raises ``CheckpointError`` naming the file.

``run_dir/config.json`` has one writer, ``write_run_config`` (the trainer calls it at start-up, and every
checkpoint refreshes it).

Distributed use: call ``save_checkpoint`` / ``load_checkpoint`` on every rank. Under FSDP2 the full
(unsharded) state is gathered collectively; only rank 0 writes, and all ranks meet at a barrier.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
import torch.nn as nn
from safetensors.torch import load_file, save_file

from model.corridor.files import atomic_dir, write_json_atomic
from model.errors import UserError
from model.gpt import GPT, GPTConfig

FORMAT = "webrefinery-checkpoint"
FORMAT_VERSION = 1
STEP_DIR_RE = re.compile(r"^step_(\d{8,})$")
MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
STATE_FILE = "state.json"


class CheckpointError(UserError):
    """A checkpoint is missing, incomplete, tampered with, or does not fit the model."""


# ---------------------------------------------------------------------------------------------
# small helpers


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain module under torch.compile (``_orig_mod``) and DDP (``module``) wrappers."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, torch.nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model


def _dist_info() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _barrier() -> None:
    if _dist_info()[1] > 1:
        torch.distributed.barrier()


def _is_sharded(model: nn.Module) -> bool:
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # pragma: no cover - old torch
        return False
    return any(isinstance(p, DTensor) for p in model.parameters())


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in 8 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            chunk = f.read(8 << 20)
            if not chunk:
                break
            h.update(chunk)
    return h.hexdigest()


def _json_checksum(obj: dict) -> str:
    body = json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=True)
    return hashlib.sha256(body.encode()).hexdigest()


_write_json_atomic = write_json_atomic  # older name, still used by model/finetune/train.py


def write_run_config(run_dir, run_config: Optional[dict] = None, model_config: Optional[dict] = None) -> None:
    """Merge ``run_config`` (and ``{"model": model_config}``) into run_dir/config.json, atomically: the one
    writer of that file (an unreadable old file is replaced)."""
    cfg_path = Path(run_dir) / "config.json"
    current = {}
    if cfg_path.is_file():
        try:
            current = json.loads(cfg_path.read_text())
        except json.JSONDecodeError:
            current = {}
    current.update(run_config or {})
    if model_config is not None:
        current["model"] = model_config
    write_json_atomic(cfg_path, current)


def _encode_tree(obj: Any, tensors: dict, path: str) -> Any:
    """JSON-able copy of a nested state (dicts/lists/tuples/scalars); tensors go to ``tensors``."""
    if isinstance(obj, torch.Tensor):
        tensors[path] = obj.detach().to("cpu").contiguous()
        return {"__tensor__": path}
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj):
            return {k: _encode_tree(v, tensors, f"{path}.{k}") for k, v in obj.items()}
        return {"__items__": [[_encode_tree(k, tensors, f"{path}.key{i}"), _encode_tree(v, tensors, f"{path}.{k}")]
                              for i, (k, v) in enumerate(obj.items())]}
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode_tree(v, tensors, f"{path}.{i}") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_encode_tree(v, tensors, f"{path}.{i}") for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, (np.integer, np.floating, np.bool_)):
        return obj.item()
    raise CheckpointError(f"cannot store a value of type {type(obj).__name__} at {path!r} in a checkpoint")


def _decode_tree(obj: Any, tensors: dict) -> Any:
    if isinstance(obj, dict):
        if set(obj) == {"__tensor__"}:
            key = obj["__tensor__"]
            if key not in tensors:
                raise CheckpointError(f"optimizer state refers to tensor {key!r} that is not in {OPTIMIZER_FILE}")
            return tensors[key]
        if set(obj) == {"__tuple__"}:
            return tuple(_decode_tree(v, tensors) for v in obj["__tuple__"])
        if set(obj) == {"__items__"}:
            return {_decode_tree(k, tensors): _decode_tree(v, tensors) for k, v in obj["__items__"]}
        return {k: _decode_tree(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_decode_tree(v, tensors) for v in obj]
    return obj


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def capture_rng_states() -> dict:
    """Torch (CPU and every CUDA device), Python and NumPy global RNG states as JSON-able values."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    state = {
        "torch": _b64(torch.get_rng_state().numpy().tobytes()),
        "python": [py_state[0], list(py_state[1]), py_state[2]],
        "numpy": [np_state[0], _b64(np_state[1].astype(np.uint32).tobytes()), int(np_state[2]),
                  int(np_state[3]), float(np_state[4])],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = [_b64(s.numpy().tobytes()) for s in torch.cuda.get_rng_state_all()]
    return state


def restore_rng_states(rng: dict) -> None:
    """Undo ``capture_rng_states`` (CUDA states only when the same number of devices is visible)."""
    if not rng:
        return
    if "torch" in rng:
        torch.set_rng_state(torch.frombuffer(bytearray(base64.b64decode(rng["torch"])), dtype=torch.uint8))
    if "python" in rng:
        version, internal, gauss = rng["python"]
        random.setstate((version, tuple(internal), gauss))
    if "numpy" in rng:
        name, keys, pos, has_gauss, cached = rng["numpy"]
        np.random.set_state((name, np.frombuffer(base64.b64decode(keys), dtype=np.uint32), pos, has_gauss, cached))
    if "cuda" in rng and torch.cuda.is_available() and len(rng["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(
            [torch.frombuffer(bytearray(base64.b64decode(s)), dtype=torch.uint8) for s in rng["cuda"]])


# ---------------------------------------------------------------------------------------------
# gathering and applying state


def full_model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The unsharded model state on CPU, without ``lm_head.weight`` when it is tied to the embedding."""
    base = unwrap_model(model)
    if _is_sharded(base):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        sd = get_model_state_dict(base, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    else:
        sd = base.state_dict()
    config = getattr(base, "config", None)
    if config is not None and getattr(config, "tie_embeddings", False):
        sd = {k: v for k, v in sd.items() if k != "lm_head.weight"}
    return {k: v.detach().to("cpu").contiguous() for k, v in sd.items()}


def full_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    base = unwrap_model(model)
    if _is_sharded(base):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        return get_optimizer_state_dict(base, optimizer,
                                        options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return optimizer.state_dict()


def apply_model_state(model: nn.Module, sd: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Copy a (full) state dict into ``model``; missing/unexpected keys or shape mismatches -> CheckpointError."""
    base = unwrap_model(model)
    config = getattr(base, "config", None)
    tied = config is not None and getattr(config, "tie_embeddings", False)
    expected = dict(base.state_dict())
    if tied:
        expected.pop("lm_head.weight", None)
    missing = sorted(set(expected) - set(sd))
    unexpected = sorted(set(sd) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"{source} does not fit the model: missing {missing[:8]}, unexpected {unexpected[:8]}")
    for k, v in sd.items():
        if tuple(expected[k].shape) != tuple(v.shape):
            raise CheckpointError(f"{source}: tensor {k!r} has shape {tuple(v.shape)}, "
                                  f"the model expects {tuple(expected[k].shape)}")
    if _is_sharded(base):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        set_model_state_dict(base, sd, options=StateDictOptions(full_state_dict=True, strict=not tied))
    else:
        base.load_state_dict(sd, strict=not tied)


def _apply_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer, osd: dict) -> None:
    base = unwrap_model(model)
    try:
        if _is_sharded(base):
            from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

            set_optimizer_state_dict(base, optimizer, osd, options=StateDictOptions(full_state_dict=True))
        else:
            optimizer.load_state_dict(osd)
    except (ValueError, KeyError, RuntimeError) as e:
        raise CheckpointError(f"optimizer state does not fit the optimizer: {e}") from e


# ---------------------------------------------------------------------------------------------
# listing


def list_checkpoints(run_dir) -> list[tuple[int, Path]]:
    """(step, path) of every complete step directory under run_dir/checkpoints, by step."""
    ckpt_dir = Path(run_dir) / "checkpoints"
    found = []
    if ckpt_dir.is_dir():
        for p in ckpt_dir.iterdir():
            m = STEP_DIR_RE.match(p.name)
            if m and p.is_dir() and (p / STATE_FILE).is_file():
                found.append((int(m.group(1)), p))
    return sorted(found)


def latest_checkpoint(run_dir) -> Optional[Path]:
    """The highest complete step directory of a run, or None when it has none."""
    found = list_checkpoints(run_dir)
    return found[-1][1] if found else None


def resolve_checkpoint(path) -> Path:
    """A step directory: ``path`` itself, or the latest checkpoint when ``path`` is a run directory."""
    path = Path(path)
    if (path / STATE_FILE).is_file():
        return path
    if path.is_dir() and (path / "checkpoints").is_dir():
        latest = latest_checkpoint(path)
        if latest is None:
            raise CheckpointError(f"run directory {path} holds no complete checkpoint")
        return latest
    if not path.exists():
        raise CheckpointError(f"checkpoint path {path} does not exist")
    raise CheckpointError(f"{path} is neither a checkpoint step directory (with {STATE_FILE}) nor a run directory")


def prune_checkpoints(run_dir, keep_last: int) -> list[Path]:
    """Delete all but the ``keep_last`` newest checkpoints; return the deleted paths."""
    if keep_last <= 0:
        return []
    doomed = [p for _, p in list_checkpoints(run_dir)[:-keep_last]]
    for p in doomed:
        shutil.rmtree(p, ignore_errors=True)
    return doomed


# ---------------------------------------------------------------------------------------------
# save / load


def save_checkpoint(run_dir, step: int, model: nn.Module, optimizer: Optional[torch.optim.Optimizer] = None,
                    scheduler_state: Optional[dict] = None, data_state: Optional[dict] = None,
                    extra: Optional[dict] = None, *, run_config: Optional[dict] = None) -> Path:
    """Write run_dir/checkpoints/step_{step:08d}/ atomically and return its path.

    ``run_config`` (optional) is merged into run_dir/config.json beside ``{"model": ...}``.
    """
    run_dir = Path(run_dir)
    rank, _ = _dist_info()
    model_sd = full_model_state(model)  # collective under FSDP
    opt_sd = full_optimizer_state(model, optimizer) if optimizer is not None else None
    final = run_dir / "checkpoints" / f"step_{int(step):08d}"
    if rank == 0:
        base = unwrap_model(model)
        config = getattr(base, "config", None)
        model_config = config.to_dict() if isinstance(config, GPTConfig) else None
        with atomic_dir(final) as tmp:  # renamed to final when complete, files 0644 under umask 022
            files = {}
            save_file(model_sd, str(tmp / MODEL_FILE), metadata={"format": FORMAT, "step": str(step)})
            files[MODEL_FILE] = tmp / MODEL_FILE
            opt_tree = None
            if opt_sd is not None:
                opt_tensors: dict[str, torch.Tensor] = {}
                opt_tree = _encode_tree(opt_sd, opt_tensors, "opt")
                save_file(opt_tensors, str(tmp / OPTIMIZER_FILE), metadata={"format": FORMAT})
                files[OPTIMIZER_FILE] = tmp / OPTIMIZER_FILE
            state = {
                "format": FORMAT,
                "version": FORMAT_VERSION,
                "step": int(step),
                "model_config": model_config,
                "scheduler": scheduler_state,
                "data": data_state,
                "rng": capture_rng_states(),
                "extra": extra,
                "optimizer": opt_tree,
                "files": {name: {"sha256": file_sha256(p), "bytes": p.stat().st_size} for name, p in files.items()},
            }
            state["checksum"] = _json_checksum(state)
            with open(tmp / STATE_FILE, "w") as f:
                json.dump(state, f, indent=1, sort_keys=True)
                f.flush()
                os.fsync(f.fileno())
        if model_config is not None or run_config:
            write_run_config(run_dir, run_config, model_config)
    _barrier()
    return final


def read_checkpoint_state(path) -> tuple[Path, dict]:
    """(step dir, verified state.json contents): checks state.json's own checksum and every tensor file."""
    step_dir = resolve_checkpoint(path)
    state_path = step_dir / STATE_FILE
    try:
        state = json.loads(state_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{state_path} is unreadable or not valid JSON (truncated or tampered?): {e}") from e
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{state_path} is not a {FORMAT} state file")
    if state.get("version", 0) > FORMAT_VERSION:
        raise CheckpointError(f"{state_path} has format version {state.get('version')}, "
                              f"this code reads up to {FORMAT_VERSION}")
    stored = state.pop("checksum", None)
    if stored != _json_checksum(state):
        raise CheckpointError(f"{state_path} does not match its checksum: the file was modified or damaged")
    for name, meta in state.get("files", {}).items():
        fp = step_dir / name
        if not fp.is_file():
            raise CheckpointError(f"checkpoint file {fp} is missing")
        size = fp.stat().st_size
        if size != meta["bytes"]:
            raise CheckpointError(f"checkpoint file {fp} has {size} bytes, expected {meta['bytes']} (truncated?)")
        digest = file_sha256(fp)
        if digest != meta["sha256"]:
            raise CheckpointError(f"checkpoint file {fp} fails its sha256 check (expected {meta['sha256'][:16]}..., "
                                  f"got {digest[:16]}...): the file was modified or damaged")
    return step_dir, state


def _load_tensors(fp: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(fp))
    except Exception as e:  # safetensors raises its own error types
        raise CheckpointError(f"cannot read {fp}: {e}") from e


def load_checkpoint(path, model: nn.Module, optimizer: Optional[torch.optim.Optimizer] = None) -> dict:
    """Verify and load a checkpoint (run dir -> latest) into ``model`` (and ``optimizer``).

    Returns the state (step, scheduler, data, rng, extra, model_config, path). RNG states are not
    applied here: call ``restore_rng_states(state["rng"])`` to continue a run exactly.
    """
    step_dir, state = read_checkpoint_state(path)
    apply_model_state(model, _load_tensors(step_dir / MODEL_FILE), source=str(step_dir / MODEL_FILE))
    if optimizer is not None:
        if state.get("optimizer") is None or OPTIMIZER_FILE not in state.get("files", {}):
            raise CheckpointError(f"{step_dir} holds no optimizer state")
        tensors = _load_tensors(step_dir / OPTIMIZER_FILE)
        _apply_optimizer_state(model, optimizer, _decode_tree(state["optimizer"], tensors))
    state["path"] = str(step_dir)
    return state


def load_model_for_inference(path, device="cpu") -> tuple[GPT, GPTConfig, Optional[str]]:
    """(model in eval mode on ``device``, its config, path of the run's tokenizer.json or None).

    ``path`` is a run directory (its latest checkpoint is used) or a step directory.
    """
    step_dir, state = read_checkpoint_state(path)
    cfg_dict = state.get("model_config")
    run_dir = step_dir.parent.parent if step_dir.parent.name == "checkpoints" else step_dir
    if cfg_dict is None and (run_dir / "config.json").is_file():
        cfg_dict = json.loads((run_dir / "config.json").read_text()).get("model")
    if cfg_dict is None:
        raise CheckpointError(f"{step_dir}: no model config in {STATE_FILE} or {run_dir / 'config.json'}")
    config = GPTConfig.from_dict(cfg_dict)
    model = GPT(config)
    apply_model_state(model, _load_tensors(step_dir / MODEL_FILE), source=str(step_dir / MODEL_FILE))
    model.to(device).eval()
    tokenizer = None
    for candidate in (step_dir / "tokenizer.json", run_dir / "tokenizer.json"):
        if candidate.is_file():
            tokenizer = str(candidate)
            break
    return model, config, tokenizer
