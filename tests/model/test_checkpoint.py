"""Tests of model/checkpoint.py: exact round trip, atomic layout, tamper/truncation detection."""

from __future__ import annotations

import json
import os
import random

import numpy as np
import pytest
import torch

from model.checkpoint import (CheckpointError, capture_rng_states, latest_checkpoint, list_checkpoints,
                              load_checkpoint, load_model_for_inference, prune_checkpoints, restore_rng_states,
                              save_checkpoint)
from model.gpt import GPT, GPTConfig

CFG = GPTConfig(vocab_size=67, n_layer=2, n_head=2, n_embd=16, block_size=16)


def trained_pair(seed=0):
    torch.manual_seed(seed)
    model = GPT(CFG)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.9, 0.95))
    idx = torch.randint(0, 67, (2, 12))
    for _ in range(3):
        _, loss = model(idx, idx)
        loss.backward()
        opt.step()
        opt.zero_grad()
    return model, opt


def test_round_trip_restores_model_and_optimizer_exactly(tmp_path):
    model, opt = trained_pair()
    path = save_checkpoint(tmp_path, 3, model, opt, scheduler_state={"step": 3}, data_state={"epoch": 1, "position": 8},
                           extra={"note": "x", "loss": float("nan")})
    assert path == tmp_path / "checkpoints" / "step_00000003"
    assert sorted(os.listdir(path)) == ["model.safetensors", "optimizer.safetensors", "state.json"]
    assert json.loads((tmp_path / "config.json").read_text())["model"] == CFG.to_dict()

    torch.manual_seed(99)
    model2 = GPT(CFG)
    opt2 = torch.optim.AdamW(model2.parameters(), lr=5.0)
    state = load_checkpoint(tmp_path, model2, opt2)  # run dir -> latest
    assert state["step"] == 3 and state["data"] == {"epoch": 1, "position": 8} and state["scheduler"] == {"step": 3}
    assert state["extra"]["note"] == "x" and np.isnan(state["extra"]["loss"])
    for (k, a), b in zip(model.state_dict().items(), model2.state_dict().values()):
        assert torch.equal(a, b), k
    assert model2.lm_head.weight is model2.tok_emb.weight  # tying survives loading
    s1, s2 = opt.state_dict(), opt2.state_dict()
    assert s1["param_groups"] == s2["param_groups"]  # lr, betas tuple, ... restored
    for i in s1["state"]:
        for key in s1["state"][i]:
            assert torch.equal(s1["state"][i][key], s2["state"][i][key])
    # one more identical step gives identical weights
    idx = torch.randint(0, 67, (2, 12), generator=torch.Generator().manual_seed(5))
    for m, o in ((model, opt), (model2, opt2)):
        m(idx, idx)[1].backward()
        o.step()
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), model2.parameters()))


def test_rng_states_round_trip():
    state = capture_rng_states()
    expected = (torch.rand(3), random.random(), np.random.rand())
    torch.rand(5), random.random(), np.random.rand(2)
    restore_rng_states(json.loads(json.dumps(state)))
    got = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(expected[0], got[0]) and expected[1] == got[1] and expected[2] == got[2]


def flip_byte(path, offset_from_end=100):
    data = bytearray(path.read_bytes())
    data[-offset_from_end] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("victim", ["model.safetensors", "optimizer.safetensors"])
def test_tampered_tensor_file_is_refused(tmp_path, victim):
    model, opt = trained_pair()
    path = save_checkpoint(tmp_path, 1, model, opt)
    flip_byte(path / victim)
    with pytest.raises(CheckpointError, match=f"{victim}.*sha256"):
        load_checkpoint(path, GPT(CFG), torch.optim.AdamW(GPT(CFG).parameters()))
    with pytest.raises(CheckpointError):
        load_model_for_inference(path)


def test_truncated_file_is_refused(tmp_path):
    model, opt = trained_pair()
    path = save_checkpoint(tmp_path, 1, model, opt)
    data = (path / "model.safetensors").read_bytes()
    (path / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(path, GPT(CFG))


def test_tampered_or_truncated_state_json_is_refused(tmp_path):
    model, _ = trained_pair()
    path = save_checkpoint(tmp_path, 1, model)
    state_file = path / "state.json"
    original = state_file.read_text()
    state = json.loads(original)
    state["step"] = 2
    state_file.write_text(json.dumps(state))
    with pytest.raises(CheckpointError, match="checksum"):
        load_checkpoint(path, GPT(CFG))
    state_file.write_text(original[: len(original) // 2])
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_checkpoint(path, GPT(CFG))


def test_missing_optimizer_and_wrong_shapes_are_errors(tmp_path):
    model, _ = trained_pair()
    path = save_checkpoint(tmp_path, 1, model)
    with pytest.raises(CheckpointError, match="no optimizer state"):
        load_checkpoint(path, GPT(CFG), torch.optim.AdamW(GPT(CFG).parameters()))
    other = GPT(GPTConfig(vocab_size=67, n_layer=2, n_head=2, n_embd=32, block_size=16))
    with pytest.raises(CheckpointError, match="shape"):
        load_checkpoint(path, other)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nowhere", GPT(CFG))
    with pytest.raises(CheckpointError, match="no complete checkpoint"):
        (tmp_path / "empty" / "checkpoints").mkdir(parents=True)
        load_checkpoint(tmp_path / "empty", GPT(CFG))


def test_latest_ignores_incomplete_dirs_and_prune_keeps_newest(tmp_path):
    model, _ = trained_pair()
    for step in (5, 10, 20):
        save_checkpoint(tmp_path, step, model)
    ckpts = tmp_path / "checkpoints"
    (ckpts / ".tmp-step_00000030-abcd").mkdir()  # a save that died before its rename
    (ckpts / "step_00000040").mkdir()  # no state.json: not complete
    assert latest_checkpoint(tmp_path).name == "step_00000020"
    assert [s for s, _ in list_checkpoints(tmp_path)] == [5, 10, 20]
    prune_checkpoints(tmp_path, keep_last=2)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [10, 20]
    save_checkpoint(tmp_path, 20, model)  # re-saving a step replaces it atomically
    assert [s for s, _ in list_checkpoints(tmp_path)] == [10, 20]
    assert not [p for p in ckpts.iterdir() if p.name.startswith(".old")]


def test_load_model_for_inference_returns_eval_model_config_and_tokenizer(tmp_path):
    model, _ = trained_pair()
    path = save_checkpoint(tmp_path, 7, model)
    loaded, cfg, tok = load_model_for_inference(tmp_path)
    assert cfg == CFG and not loaded.training and tok is None
    (tmp_path / "tokenizer.json").write_text("{}")
    loaded, cfg, tok = load_model_for_inference(path)
    assert tok == str(tmp_path / "tokenizer.json")
    idx = torch.randint(0, 67, (1, 10))
    model.eval()
    with torch.no_grad():
        assert torch.equal(loaded(idx)[0], model(idx)[0])


def test_checkpoint_files_hold_no_pickles(tmp_path):
    model, opt = trained_pair()
    path = save_checkpoint(tmp_path, 1, model, opt)
    for f in path.iterdir():
        head = f.read_bytes()[:2]
        assert head != b"\x80\x02" and not head.startswith(b"PK"), f  # pickle protocol / torch zip archive
    from safetensors import safe_open

    with safe_open(str(path / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert "lm_head.weight" not in keys and "tok_emb.weight" in keys  # tied head stored once
