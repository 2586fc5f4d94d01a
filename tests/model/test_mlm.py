"""Tests of the masked-LM objective (model/mlm.py, ``refinery pretrain --objective mlm``): BERT's masking
statistics, bidirectional attention, the loss falling on real text, exact resume, the mask token added
without moving any id, ``refinery eval`` on such a checkpoint, and fine-tuning it."""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer

from model.errors import UserError
from model.gpt import GPT, GPTConfig
from model.mlm import IGNORE_INDEX, MASK_TOKEN, MaskedWindows, MaskingParams, mask_tokens, seeded_generator

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_masking_statistics_match_bert(shared_data):
    text = (shared_data / "text" / "tinyshakespeare.txt").read_bytes()[:400_000]
    eot, vocab, mask_id = 256, 257, 257
    x = torch.tensor(list(text[: 3000 * 128]), dtype=torch.long).view(3000, 128)
    x[:, ::16] = eot  # document ends are never selected
    inputs, labels = mask_tokens(x, mask_id, vocab, MaskingParams(), seeded_generator("test", 1), [eot])
    eligible = x != eot
    selected = labels != IGNORE_INDEX
    n = int(eligible.sum())
    assert not (selected & ~eligible).any()
    rate = selected.sum().item() / n
    assert abs(rate - 0.15) < 0.005, rate  # 15% of ~360k tokens: sd 0.0006
    s = selected.sum().item()
    masked = ((inputs == mask_id) & selected).sum().item() / s
    unchanged = ((inputs == x) & selected).sum().item() / s
    replaced = ((inputs != x) & (inputs != mask_id) & selected).sum().item() / s
    assert abs(masked - 0.8) < 0.01, masked
    assert abs(replaced - 0.1 * (1 - 1 / vocab)) < 0.01, replaced  # a random draw may hit the original token
    assert abs(unchanged - (0.1 + 0.1 / vocab)) < 0.01, unchanged
    assert torch.equal(labels[selected], x[selected]) and (inputs[~selected] == x[~selected]).all()
    assert inputs.max() <= mask_id


def test_masks_are_drawn_afresh_per_draw_and_reproducible():
    class Loader:  # a window loader stand-in: the same window at every position
        def __init__(self):
            self.position = 0

        def state_dict(self):
            return {"position": self.position}

        def next_batch(self):
            self.position += 1
            x = torch.arange(4 * 200).view(4, 200) % 250
            return x, x

    a = MaskedWindows(Loader(), 250, 250, MaskingParams(), seed=3, rank=0)
    first, second = a.next_batch(), a.next_batch()
    assert not torch.equal(first[1], second[1])  # same window, new mask
    again = MaskedWindows(Loader(), 250, 250, MaskingParams(), seed=3, rank=0).next_batch()
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    other_rank = MaskedWindows(Loader(), 250, 250, MaskingParams(), seed=3, rank=1).next_batch()
    assert not torch.equal(first[1], other_rank[1])
    # a window's mask depends on its slot in the round, not on how the round is split over ranks
    class Half(Loader):
        def next_batch(self):
            x, _ = super().next_batch()
            return x[:2], x[:2]

    r0 = MaskedWindows(Half(), 250, 250, MaskingParams(), seed=3, rank=0).next_batch()
    assert torch.equal(r0[1], first[1][:2])


def test_attention_is_bidirectional_only_for_the_mlm_model():
    torch.manual_seed(0)
    idx = torch.randint(0, 100, (1, 12))
    later = idx.clone()
    later[0, 9] = (later[0, 9] + 1) % 100
    for bidirectional in (False, True):
        torch.manual_seed(0)
        m = GPT(GPTConfig(vocab_size=100, n_layer=2, n_head=2, n_embd=32, block_size=16,
                          bidirectional=bidirectional)).eval()
        with torch.no_grad():
            a, b = m(idx)[0], m(later)[0]
        changed = (a[0, :9] - b[0, :9]).abs().max().item()
        if bidirectional:
            assert changed > 1e-4  # position 2's output depends on position 9
        else:
            assert changed == 0.0  # the causal control: earlier positions never see later tokens


def test_padding_mask_keeps_padding_out_of_a_bidirectional_model():
    torch.manual_seed(0)
    m = GPT(GPTConfig(vocab_size=50, n_layer=1, n_head=2, n_embd=16, block_size=16, bidirectional=True)).eval()
    real = torch.randint(0, 50, (1, 5))
    padded = torch.cat([real, torch.zeros(1, 3, dtype=torch.long)], 1)
    mask = torch.tensor([[True] * 5 + [False] * 3])
    with torch.no_grad():
        assert torch.allclose(m.hidden_states(real), m.hidden_states(padded, attention_mask=mask)[:, :5], atol=1e-6)


def test_mlm_pretraining_learns_and_records_the_mask_token(tiny_mlm_run, shared_data):
    log = [json.loads(l) for l in (tiny_mlm_run / "log.jsonl").read_text().splitlines()]
    assert all("mlm_acc" in r for r in log) and "val_mlm_acc" in log[-1]
    late = sum(r["loss"] for r in log[-3:]) / 3
    assert log[0]["loss"] > late + 0.4, (log[0]["loss"], late)  # it learns
    assert log[-1]["loss"] < np.log(1024) - 0.5  # below a uniform guess over the vocabulary
    cfg = json.loads((tiny_mlm_run / "config.json").read_text())
    vocab = cfg["data"]["vocab_size"]
    assert cfg["model"]["bidirectional"] is True and cfg["mlm"]["mask_id"] == vocab
    assert cfg["model"]["vocab_size"] > vocab  # the embedding table covers the mask id
    run_tok = Tokenizer.from_file(str(tiny_mlm_run / "tokenizer.json"))
    base_tok = Tokenizer.from_file(str(tiny_mlm_run.parent / "tokenizer.json"))
    assert run_tok.token_to_id(MASK_TOKEN) == vocab and base_tok.token_to_id(MASK_TOKEN) is None
    assert {k: v for k, v in run_tok.get_vocab().items() if k != MASK_TOKEN} == base_tok.get_vocab()
    text = "it 's a charming and often affecting journey"
    assert run_tok.encode(text).ids == base_tok.encode(text).ids


def test_mlm_resume_is_bit_identical(tiny_mlm_run, tmp_path):
    from safetensors.torch import load_file

    from model.checkpoint import latest_checkpoint
    from model.train import TrainConfig, train

    tokens = tiny_mlm_run.parent / "tokens"
    kw = dict(tokens=str(tokens), preset="tiny", block_size=32, batch_size=4, max_steps=8, lr=3e-3, warmup=2,
              eval_every=0, ckpt_every=0, log_every=1, device="cpu", dtype="float32", progress=False, seed=5,
              objective="mlm")
    train(TrainConfig(out=str(tmp_path / "a"), **kw))
    train(TrainConfig(out=str(tmp_path / "b"), stop_at_step=4, **kw))
    train(TrainConfig(out=str(tmp_path / "b"), resume=True, **kw))
    a = load_file(str(latest_checkpoint(tmp_path / "a") / "model.safetensors"))
    b = load_file(str(latest_checkpoint(tmp_path / "b") / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    strip = lambda p: [{k: v for k, v in json.loads(l).items() if k in ("step", "loss", "mlm_acc")}
                       for l in (p / "log.jsonl").read_text().splitlines()]
    assert strip(tmp_path / "a") == strip(tmp_path / "b")


def eval_args(checkpoint, **kw):
    from model.evaluate.cli import add_eval_arguments

    parser = add_eval_arguments(argparse.ArgumentParser())
    argv = ["--checkpoint", str(checkpoint), "--device", "cpu"]
    for k, v in kw.items():
        argv += [f"--{k.replace('_', '-')}", str(v)]
    return parser.parse_args(argv)


def test_eval_reports_masked_accuracy_and_pseudo_perplexity_and_refuses_causal_tasks(tiny_mlm_run, tmp_path,
                                                                                      shared_data):
    from model.evaluate.cli import run_eval

    dev = (shared_data / "finetune" / "sst2" / "dev.tsv").read_text().splitlines()[1:120]
    text = tmp_path / "heldout.txt"
    text.write_text(" ".join(l.split("\t")[0] for l in dev))
    out = tmp_path / "eval.json"
    results = run_eval(eval_args(tiny_mlm_run, text=text, output=out, max_tokens=600, batch_size=32))
    mlm = results["mlm"]
    assert json.loads(out.read_text())["mlm"]["masked_acc"] == mlm["masked_acc"]
    assert 0.02 < mlm["masked_acc"] < 1 and mlm["masked_tokens"] > 50
    assert 1 < mlm["pseudo_ppl"] < 1024 and mlm["pppl_tokens"] == 600  # better than a uniform guess
    with pytest.raises(UserError, match=r"hellaswag score next-token probabilities \(causal-only\).*--tasks mlm"):
        run_eval(eval_args(tiny_mlm_run, tasks="hellaswag", text=text))
    with pytest.raises(UserError, match="causal-only"):
        run_eval(eval_args(tiny_mlm_run, tasks="bpb,mlm", text=text))


def test_finetune_on_an_mlm_checkpoint(tiny_mlm_run, tmp_path, shared_data):
    from model.finetune.export import export_classifier
    from model.finetune.train import FinetuneConfig, finetune, load_finetuned

    out = tmp_path / "ft"
    summary = finetune(FinetuneConfig(checkpoint=str(tiny_mlm_run), task="sst2", out=str(out), device="cpu",
                                      dtype="float32", progress=False, max_steps=40, eval_every=20, batch_size=16,
                                      limit_train=640, limit_dev=200, lr=2e-3, max_length=64))
    assert summary["finished"] and summary["best_dev_accuracy"] is not None
    model, meta = load_finetuned(out)
    assert meta["pooling"] == "mean" and model.body.config.bidirectional
    with pytest.raises(UserError, match="no transformers export"):
        export_classifier(out, tmp_path / "hf")


def test_causal_export_refuses_an_mlm_checkpoint(tiny_mlm_run, tmp_path):
    from model.export import export_hf

    with pytest.raises(UserError, match="no Hugging Face export"):
        export_hf(tiny_mlm_run, tmp_path / "hf")


def test_mlm_under_torchrun_ddp_matches_one_process(tmp_path, shared_data):
    """Two gloo ranks with batch 2 draw the same windows and the same masks as one process with batch 4
    (the same DDP path as the causal objective)."""
    import os
    import subprocess
    import sys

    from pipeline.paths import REPO
    from model.corridor.token_shards import chunk_documents, write_token_set
    from model.train import TrainConfig, train

    text = (shared_data / "text" / "tinyshakespeare.txt").read_bytes()[:60_000]
    docs = [list(p) + [256] for p in text.split(b"\n\n") if p]
    tokens = tmp_path / "tokens"
    write_token_set(tokens, {"train": chunk_documents(docs[:-30], 100), "val": [docs[-30:]]}, vocab_size=257,
                    eot_id=256)
    common = dict(tokens=str(tokens), preset="tiny", block_size=32, max_steps=2, device="cpu", dtype="float32",
                  log_every=1, eval_every=0, eval_steps=2, progress=False, prefetch=0, lr=1e-3, warmup=0, seed=5,
                  objective="mlm")
    train(TrainConfig(out=str(tmp_path / "single"), batch_size=4, **common))
    flags = ["--preset", "tiny", "--block-size", "32", "--max-steps", "2", "--device", "cpu", "--dtype", "float32",
             "--log-every", "1", "--eval-every", "0", "--eval-steps", "2", "--no-progress", "--prefetch", "0",
             "--lr", "1e-3", "--warmup", "0", "--seed", "5", "--objective", "mlm", "--tokens", str(tokens),
             "--out", str(tmp_path / "ddp"), "--batch-size", "2"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "model.train", *flags], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    read = lambda p: [json.loads(l) for l in (p / "log.jsonl").read_text().splitlines()]
    one, two = read(tmp_path / "single"), read(tmp_path / "ddp")
    assert [r["step"] for r in one] == [r["step"] for r in two] == [1, 2]
    # step 1 runs the same initial weights on the same windows with the same masks: the masked-token accuracy
    # (hits and counts summed over ranks) is identical. The losses differ slightly: DDP averages the ranks'
    # per-rank means over their own masked tokens, one process takes the mean over all of them (as any
    # token-level loss under DDP does), so later steps agree only approximately.
    assert one[0]["mlm_acc"] == two[0]["mlm_acc"]
    assert one[0]["loss"] == pytest.approx(two[0]["loss"], abs=0.01)
    assert all(math.isfinite(r["loss"]) for r in one + two)
