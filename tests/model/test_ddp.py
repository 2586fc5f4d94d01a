"""Distributed training on CPU: ``torchrun --nproc_per_node 2`` (gloo) agrees with one process.

Two ranks with micro-batch B take, between them, exactly the windows one process takes with batch
2B (see model/data.py), so losses and weights must agree up to float reduction order. DDP is run for
two steps; FSDP2 (``fully_shard``) is run for one step, checkpointed (gathered), and resumed
(re-sharded) for the second.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pipeline.paths import REPO, require_shared
from model.corridor.token_shards import chunk_documents, write_token_set
from model.train import TrainConfig, train

COMMON = ["--preset", "tiny", "--block-size", "32", "--max-steps", "2", "--device", "cpu", "--dtype", "float32",
          "--log-every", "1", "--eval-every", "0", "--eval-steps", "2", "--no-progress", "--prefetch", "0",
          "--lr", "1e-3", "--warmup", "0", "--seed", "5"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Byte tokens of a Shakespeare excerpt, and a one-process run with the doubled batch."""
    text = require_shared("text", "tinyshakespeare.txt").read_bytes()[:60_000]
    docs = [list(p) + [256] for p in text.split(b"\n\n") if p]
    root = tmp_path_factory.mktemp("ddp")
    tokens = root / "tokens"
    write_token_set(tokens, {"train": chunk_documents(docs[:-30], 100), "val": [docs[-30:]]}, vocab_size=257, eot_id=256)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(TrainConfig(tokens=str(tokens), out=str(root / "single"), preset="tiny", block_size=32, max_steps=2,
                          device="cpu", dtype="float32", log_every=1, eval_every=0, eval_steps=2, progress=False,
                          prefetch=0, lr=1e-3, warmup=0, seed=5, batch_size=4))
    finally:
        torch.set_num_threads(threads)
    return tokens, root / "single"


def torchrun(args: list[str]) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "model.train", *args]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def read_log(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]


def assert_same_run(run: Path, single: Path, tol: float = 1e-5) -> None:
    log, ref = read_log(run), read_log(single)
    assert [r["step"] for r in log] == [r["step"] for r in ref] == [1, 2]
    for a, b in zip(log, ref):
        assert a["loss"] == pytest.approx(b["loss"], abs=tol)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=10 * tol)
        assert a["tokens"] == b["tokens"] == a["step"] * 4 * 32  # 2 ranks x 2 sequences x 32 tokens
    assert log[-1]["val_loss"] == pytest.approx(ref[-1]["val_loss"], abs=tol)
    wa = load_file(str(run / "checkpoints" / "step_00000002" / "model.safetensors"))
    wb = load_file(str(single / "checkpoints" / "step_00000002" / "model.safetensors"))
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.allclose(wa[k], wb[k], atol=10 * tol), k  # one Adam step moves weights by ~lr = 1e-3
    assert json.loads((run / "config.json").read_text())["world_size"] == 2


def test_torchrun_ddp_two_ranks_match_one_process(reference, tmp_path):
    tokens, single = reference
    torchrun([*COMMON, "--tokens", str(tokens), "--out", str(tmp_path / "ddp"), "--batch-size", "2"])
    assert_same_run(tmp_path / "ddp", single)


@pytest.mark.slow
def test_torchrun_fsdp2_checkpoint_and_resume_match_one_process(reference, tmp_path):
    tokens, single = reference
    args = [*COMMON, "--tokens", str(tokens), "--out", str(tmp_path / "fsdp"), "--batch-size", "2", "--fsdp"]
    torchrun([*args, "--stop-at-step", "1"])
    proc = torchrun([*args, "--resume"])
    assert "resumed from" in proc.stderr
    assert_same_run(tmp_path / "fsdp", single)


@pytest.mark.slow
def test_torchrun_ddp_with_compile_and_bf16_autocast_matches_one_float32_process(reference, tmp_path):
    """The GPU configuration (DDP around a compiled model under bf16 autocast), on CPU with gloo."""
    tokens, single = reference
    args = [a if a != "float32" else "bfloat16" for a in COMMON]
    torchrun([*args, "--tokens", str(tokens), "--out", str(tmp_path / "ddp"), "--batch-size", "2", "--compile"])
    assert json.loads((tmp_path / "ddp" / "config.json").read_text())["train"]["compile"] is True
    assert_same_run(tmp_path / "ddp", single, tol=1e-2)  # bf16 matmuls: agreement to ~2-3 digits
