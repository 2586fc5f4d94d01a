"""Files the model wing shares (checkpoints, exported Hugging Face folders, token sets) get the modes the
umask implies, like their neighbours: safetensors' ``save_file`` alone creates its files 0600, which a
server running as another user (vLLM, TGI, a container) cannot read."""

from __future__ import annotations

import os
import stat

import pytest
import torch

from model.corridor.files import atomic_path, current_umask, write_bytes_atomic
from model.corridor.token_shards import write_token_set
from model.checkpoint import save_checkpoint
from model.export import export_model
from model.gpt import GPT, GPTConfig


@pytest.fixture(params=[0o022, 0o027])
def umask(request):
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def modes(folder):
    return {p.relative_to(folder).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in folder.rglob("*")}


def tiny_model():
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=320, n_layer=1, n_head=2, n_kv_head=2, n_embd=32, block_size=16, mlp_hidden=64))


def test_umask_is_read_without_changing_it(umask):
    assert current_umask() == umask and current_umask() == umask


def test_checkpoint_files_follow_the_umask(tmp_path, umask):
    model = tiny_model()
    opt = torch.optim.AdamW(model.parameters())
    model(torch.zeros(1, 4, dtype=torch.long), torch.zeros(1, 4, dtype=torch.long))[1].backward()
    opt.step()
    step = save_checkpoint(tmp_path / "run", 1, model, opt, run_config={"x": 1})
    got = modes(tmp_path / "run")
    files = {k: v for k, v in got.items() if (tmp_path / "run" / k).is_file()}
    dirs = {k: v for k, v in got.items() if (tmp_path / "run" / k).is_dir()}
    assert {"config.json", f"checkpoints/{step.name}/model.safetensors",
            f"checkpoints/{step.name}/optimizer.safetensors", f"checkpoints/{step.name}/state.json"} <= set(files)
    assert set(files.values()) == {0o666 & ~umask}, files
    assert set(dirs.values()) == {0o777 & ~umask}, dirs


def test_export_folder_files_follow_the_umask(tmp_path, umask, make_bpe):
    tok = make_bpe(["a small text to train a small tokenizer"] * 4, 280)
    tok.save(str(tmp_path / "tokenizer.json"))
    out = export_model(tiny_model(), tmp_path / "tokenizer.json", tmp_path / "hf")
    got = modes(out)
    assert "model.safetensors" in got and "config.json" in got and "tokenizer.json" in got
    assert set(got.values()) == {0o666 & ~umask}, got
    assert stat.S_IMODE(out.stat().st_mode) == 0o777 & ~umask
    export_model(tiny_model(), tmp_path / "tokenizer.json", tmp_path / "hf")  # replacing an export keeps them
    assert set(modes(out).values()) == {0o666 & ~umask}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf", "tokenizer.json"]  # no temporary left behind


def test_atomic_writes_follow_the_umask_and_leave_nothing_on_error(tmp_path, umask):
    write_token_set(tmp_path / "tokens", {"train": [[[1, 2, 9]]]}, vocab_size=10, eot_id=9, tokenizer_json="{}")
    assert set(v for k, v in modes(tmp_path / "tokens").items() if (tmp_path / "tokens" / k).is_file()) == {
        0o666 & ~umask}
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "x.bin") as tmp:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT, 0o600)  # created as safetensors does
            os.close(fd)
            raise RuntimeError("writer failed")
    assert not any("x.bin" in p.name for p in tmp_path.iterdir())
    with atomic_path(tmp_path / "x.bin") as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT, 0o600)
        os.write(fd, b"data")
        os.close(fd)
    assert (tmp_path / "x.bin").read_bytes() == b"data"
    assert stat.S_IMODE((tmp_path / "x.bin").stat().st_mode) == 0o666 & ~umask
    write_bytes_atomic(tmp_path / "x.bin", b"new")
    assert (tmp_path / "x.bin").read_bytes() == b"new" and len(list(tmp_path.glob(".*x.bin*"))) == 0
