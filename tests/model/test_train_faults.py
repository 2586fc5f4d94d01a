"""Trainer faults: a process killed while writing a checkpoint (like kill -9 mid-write) loses nothing.

The last complete checkpoint loads, the half-written one is never picked, and ``--resume`` reaches the
same losses and weights, bit for bit on CPU, as a run that was never interrupted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import torch
from safetensors.torch import load_file

from model.checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint, load_model_for_inference
from pipeline.paths import REPO, require_shared

DRIVER = textwrap.dedent('''
    import os, sys
    import torch
    torch.set_num_threads(1)
    from model import checkpoint as ckpt
    from model.train import TrainConfig, train

    tokens, out, kill_at = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if kill_at:
        real_save = ckpt.save_file
        def save_then_die(tensors, path, metadata=None):
            real_save(tensors, path, metadata=metadata)
            if f"step_{kill_at:08d}" in path:  # the model file of this checkpoint is on disk, the rest is not
                os._exit(9)
        ckpt.save_file = save_then_die
    train(TrainConfig(tokens=tokens, out=out, preset="tiny", block_size=32, batch_size=4, max_steps=12, lr=3e-3,
                      warmup=2, eval_every=0, ckpt_every=4, log_every=1, device="cpu", dtype="float32",
                      progress=False, seed=11, resume=bool(int(os.environ.get("RESUME", "0")))))
''')


def _tokens(tmp_path):
    from model.corridor.token_shards import chunk_documents, write_token_set

    text = require_shared("text", "botchan.txt").read_bytes()[:120_000]
    docs = [list(p) + [256] for p in text.split(b"\n\n") if p]
    write_token_set(tmp_path / "tokens", {"train": chunk_documents(docs, 200)}, vocab_size=257, eot_id=256)
    return tmp_path / "tokens"


def _run(tmp_path, tokens, out, kill_at=0, resume=False):
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    env = dict(os.environ, PYTHONPATH=str(REPO), RESUME="1" if resume else "0", OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, str(driver), str(tokens), str(out), str(kill_at)], env=env,
                          capture_output=True, text=True, timeout=600)


def test_kill_during_checkpoint_write_then_resume_is_exact(tmp_path):
    tokens = _tokens(tmp_path)
    straight, crashed = tmp_path / "straight", tmp_path / "crashed"
    assert _run(tmp_path, tokens, straight).returncode == 0
    proc = _run(tmp_path, tokens, crashed, kill_at=8)
    assert proc.returncode == 9, proc.stderr[-2000:]
    # the step-8 checkpoint was cut off mid-write: only step 4 is complete, and it is what loads
    assert [s for s, _ in list_checkpoints(crashed)] == [4]
    leftovers = [p.name for p in (crashed / "checkpoints").iterdir() if "00000008" in p.name]
    assert leftovers and all(name.startswith(".tmp") for name in leftovers)
    assert latest_checkpoint(crashed).name == "step_00000004"
    model, _, _ = load_model_for_inference(crashed)
    assert load_checkpoint(latest_checkpoint(crashed), model)["step"] == 4
    # resume finishes the run exactly as if it had never died
    proc = _run(tmp_path, tokens, crashed, resume=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    log = lambda d: [json.loads(line) for line in (d / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log(crashed)] == list(range(1, 13))
    assert [r["loss"] for r in log(straight)] == [r["loss"] for r in log(crashed)]
    wa = load_file(str(straight / "checkpoints" / "step_00000012" / "model.safetensors"))
    wb = load_file(str(crashed / "checkpoints" / "step_00000012" / "model.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
