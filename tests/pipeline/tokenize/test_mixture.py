"""Data mixing (issue #15): ``refinery mix`` plans a mixture of token sets, the trainer reads it.

Token sets are written with the format's one writer (model/corridor/token_shards.py ``write_token_set``); each
source's token ids encode (source, position) so a window shows where it came from."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from model.corridor.mixture import format_table, plan_mixture, read_mixture, source_facts
from model.corridor.token_shards import chunk_documents, write_token_set
from model.data import MixtureLoader, TokenDataError, TokenMixture, open_training_data
from pipeline.cli import main as refinery

VOCAB = 4000
EOT = VOCAB - 1
TOKENIZER = '{"model": {"type": "counting"}}'
SIZES = {"web": 6000, "wiki": 1500, "books": 900}  # train tokens per source
BASE = {"web": 0, "wiki": 1000, "books": 2000}  # token id = BASE + position % 997 (so ids stay < EOT)


def source_docs(name, n_tokens, doc_len=41):
    docs, pos = [], 0
    while pos < n_tokens:
        length = min(doc_len, n_tokens - pos)
        doc = [BASE[name] + (p % 997) for p in range(pos, pos + length)]
        doc[-1] = EOT
        docs.append(doc)
        pos += length
    return docs


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("mix")
    for name, size in SIZES.items():
        write_token_set(root / name, {"train": chunk_documents(source_docs(name, size), 30),
                                      "val": [source_docs(name, 400)]},
                        vocab_size=VOCAB, eot_id=EOT, tokenizer_json=TOKENIZER)
    write_token_set(root / "other_tok", {"train": [source_docs("web", 500)]}, vocab_size=VOCAB, eot_id=EOT,
                    tokenizer_json='{"model": {"type": "something else"}}')
    return root


def mix(sources, *args):
    srcs = [f"--source={n}={sources / n}" for n in SIZES]
    return refinery(["mix", *srcs, *args])


def test_epochs_plan_table_and_manifest(sources, tmp_path, capsys):
    out = tmp_path / "m.json"
    assert mix(sources, "--epochs", "web=1", "wiki=3", "books=2", "--dry-run", "--output", str(out)) == 0
    table = capsys.readouterr().out
    assert not out.exists()  # a dry run writes nothing
    assert "Component" in table and "wiki" in table and "3.00" in table and "Total" in table
    assert mix(sources, "--epochs", "web=1", "wiki=3", "books=2", "--output", str(out)) == 0
    m = read_mixture(out)
    by = {s["name"]: s for s in m["sources"]}
    assert by["wiki"]["mixture_tokens"] == 3 * SIZES["wiki"] and by["books"]["epochs"] == 2
    total = SIZES["web"] + 3 * SIZES["wiki"] + 2 * SIZES["books"]
    assert m["total_tokens"] == total and math.isclose(by["web"]["share"], SIZES["web"] / total)
    assert sum(s["share"] for s in m["sources"]) == pytest.approx(1.0)
    assert not Path(by["web"]["path"]).is_absolute() and (out.parent / by["web"]["path"]).resolve() == sources / "web"
    assert format_table(m).splitlines()[0].split()[:2] == ["Component", "Tokens"]


def test_shares_with_a_budget(sources, tmp_path):
    out = tmp_path / "m.json"
    assert mix(sources, "--shares", "web=0.5", "wiki=0.3", "books=0.2", "--budget", "9000", "--output", str(out)) == 0
    by = {s["name"]: s for s in read_mixture(out)["sources"]}
    assert by["wiki"]["mixture_tokens"] == 2700 and by["wiki"]["epochs"] == pytest.approx(1.8)
    assert by["books"]["epochs"] == pytest.approx(2.0) and by["web"]["share"] == pytest.approx(0.5)


@pytest.mark.parametrize("args, message", [
    (["--epochs", "web=1", "wiki=0", "books=1"], "'wiki' has weight 0"),
    (["--epochs", "web=1", "wiki=-2", "books=1"], "'wiki' has weight -2"),
    (["--epochs", "web=1", "wiki=1"], "'books' has no weight"),
    (["--epochs", "web=1", "wiki=1", "books=1", "news=1"], "'news', which is not a source"),
    (["--shares", "web=0.5", "wiki=0.3", "books=0.3", "--budget", "1000"], "shares sum to 1.1"),
    (["--shares", "web=0.5", "wiki=0.3", "books=0.2"], "need a token budget"),
    (["--epochs", "web=1", "wiki=1", "books=1", "--budget", "1e9"], "larger than the epochs allow"),
    (["--shares", "web=0.5", "wiki=0.3", "books=0.2", "--budget", "18000", "--max-epochs", "3"],
     "source 'wiki'.*3.60 times, more than --max-epochs 3"),
])
def test_bad_mixtures_are_one_line_errors_naming_the_source(sources, tmp_path, capsys, args, message):
    assert mix(sources, *args, "--output", str(tmp_path / "m.json")) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and __import__("re").search(message, err), err
    assert not (tmp_path / "m.json").exists()


def test_unknown_folder_and_tokenizer_mismatch_name_the_source(sources, tmp_path, capsys):
    assert refinery(["mix", f"--source=web={sources / 'web'}", f"--source=news={tmp_path / 'nowhere'}",
                     "--epochs", "web=1", "news=1", "--dry-run"]) == 2
    assert "source 'news'" in capsys.readouterr().err
    assert refinery(["mix", f"--source=web={sources / 'web'}", f"--source=odd={sources / 'other_tok'}",
                     "--epochs", "web=1", "odd=1", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "source 'odd' was tokenized differently" in err and "one tokenizer" in err


def test_trainer_refuses_a_mixture_whose_source_changed(sources, tmp_path):
    import shutil

    copy = tmp_path / "wiki"
    shutil.copytree(sources / "wiki", copy)
    m = plan_mixture([source_facts("web", sources / "web"), source_facts("wiki", copy)],
                     epochs={"web": 1, "wiki": 1})
    (tmp_path / "m.json").write_text(json.dumps(m))
    TokenMixture(tmp_path / "m.json")
    write_token_set(copy, {"train": [source_docs("wiki", 700)]}, vocab_size=VOCAB, eot_id=EOT, tokenizer_json=TOKENIZER)
    with pytest.raises(TokenDataError, match="'wiki'.*changed since the mixture was made"):
        TokenMixture(tmp_path / "m.json")


def plan(sources, tmp_path, **weights):
    kind = "shares" if abs(sum(weights.values()) - 1) < 1e-9 and all(w < 1 for w in weights.values()) else "epochs"
    m = plan_mixture([source_facts(n, sources / n) for n in weights], relative_to=tmp_path,
                     **({"shares": weights, "budget": 12000} if kind == "shares" else {"epochs": weights}))
    (tmp_path / "m.json").write_text(json.dumps(m))
    return TokenMixture(tmp_path / "m.json")


def source_of(window: np.ndarray) -> tuple[str, int]:
    """(source, start position mod 997) of a window, checked to be one contiguous slice of that source."""
    ids = [int(t) for t in window if int(t) != EOT]
    name = next(n for n in BASE if BASE[n] <= ids[0] < BASE[n] + 1000)
    assert all(BASE[name] <= t < BASE[name] + 997 for t in ids)  # never crosses into another source
    return name, ids[0] - BASE[name]


@pytest.mark.parametrize("weights", [dict(web=1.0, wiki=3.0, books=2.0), dict(web=0.6, wiki=0.25, books=0.15)])
def test_window_shares_match_the_plan_within_binomial_tolerance(sources, tmp_path, weights):
    mixture = plan(sources, tmp_path, **weights)
    block, batch = 16, 4
    loader = MixtureLoader(mixture, block, batch, seed=5)
    planned = {n: s for n, s in zip(mixture.names, mixture.shares)}
    rounds = loader.rounds_per_epoch // 2  # half an epoch: a sample, not the whole (exact) epoch
    counts = {n: 0 for n in planned}
    for _ in range(rounds):
        x, y = loader.next_batch()
        assert torch.equal(x[:, 1:], y[:, :-1])
        for row in torch.cat([x, y[:, -1:]], dim=1).numpy():
            counts[source_of(row)[0]] += 1
    n = rounds * batch
    for name, p in planned.items():
        sigma = math.sqrt(n * p * (1 - p))
        assert abs(counts[name] - n * p) <= 4 * sigma + block / 16 * n * 0.01, (name, counts, planned)
    consumed = loader.tokens_per_source()
    assert sum(consumed.values()) == n * block and {k: v // block for k, v in consumed.items()} == counts


def test_a_three_epoch_source_is_read_three_times_in_different_orders(sources, tmp_path):
    mixture = plan(sources, tmp_path, web=1.0, wiki=3.0)
    loader = MixtureLoader(mixture, 16, 2, seed=1)
    order = loader.window_order(0)
    wiki = mixture.names.index("wiki")
    n = loader.source_windows[wiki]
    mine = order[(order >> 40) == wiki] & ((1 << 40) - 1)
    assert len(mine) == 3 * n
    passes = [mine[i * n:(i + 1) * n] for i in range(3)]
    assert all(sorted(p.tolist()) == list(range(n)) for p in passes)  # each pass reads every window once
    assert len({tuple(p.tolist()) for p in passes}) == 3  # in three different orders
    web = order[(order >> 40) == 0] & ((1 << 40) - 1)
    assert sorted(web.tolist()) == list(range(loader.source_windows[0]))
    assert not np.array_equal(loader.window_order(1), order)  # the next mixture epoch is shuffled anew


def test_two_ranks_and_resume_in_the_middle_of_a_mixture_are_exact(sources, tmp_path):
    mixture = plan(sources, tmp_path, web=1.0, wiki=2.5, books=1.5)

    def make(rank, world=2, prefetch=0):
        return MixtureLoader(mixture, 16, 3, rank=rank, world_size=world, seed=9, prefetch=prefetch)

    def take(loaders, rounds):
        return [ld.next_batch()[0].numpy().tolist() for _ in range(rounds) for ld in loaders]

    total = make(0).rounds_per_epoch + 7  # into the second mixture epoch
    straight = take([make(0), make(1)], total)
    first_pair = [make(0, prefetch=2), make(1, prefetch=2)]
    first = take(first_pair, 11)
    state = json.loads(json.dumps(first_pair[0].state_dict()))
    assert state == first_pair[1].state_dict() and state["mixture"][1]["name"] == "wiki"
    for ld in first_pair:
        ld.close()
    resumed = [make(0), make(1)]
    for ld in resumed:
        ld.load_state_dict(state)
    assert first + take(resumed, total - 11) == straight
    single = make(0, world=1)  # two ranks see what one process sees with batches of 3 then 3
    one = [single.next_batch()[0].numpy().tolist() for _ in range(2 * total)]
    assert one == straight
    other = plan(sources, tmp_path, web=1.0, wiki=1.0, books=1.5)
    with pytest.raises(TokenDataError, match="mixture or its token data changed"):
        MixtureLoader(other, 16, 3, seed=9).load_state_dict(state)


def tiny(tokens, out, **kw):
    from model.train import TrainConfig

    values = dict(tokens=str(tokens), out=str(out), preset="tiny", block_size=16, batch_size=4, max_steps=8,
                  lr=3e-3, warmup=2, eval_every=4, eval_steps=2, ckpt_every=3, log_every=1, device="cpu",
                  dtype="float32", progress=False, seed=3, prefetch=0)
    values.update(kw)
    return TrainConfig(**values)


def test_trainer_on_a_mixture_logs_per_source_and_resumes_bit_identically(sources, tmp_path, one_torch_thread):
    from model.train import train

    out = tmp_path / "mix.json"
    assert mix(sources, "--epochs", "web=1", "wiki=3", "books=2", "--output", str(out)) == 0
    straight = train(tiny(out, tmp_path / "a"))
    log = [json.loads(l) for l in (tmp_path / "a" / "log.jsonl").read_text().splitlines()]
    assert all(sum(r["tokens_per_source"].values()) == r["tokens"] for r in log)
    evals = [r for r in log if "val_loss" in r]
    assert [r["step"] for r in evals] == [4, 8] and set(evals[0]["val_loss_per_source"]) == set(SIZES)
    shares = {s["name"]: s["share"] for s in read_mixture(out)["sources"]}
    assert evals[-1]["val_loss"] == pytest.approx(sum(shares[n] * v for n, v in evals[-1]["val_loss_per_source"].items()))
    config = json.loads((tmp_path / "a" / "config.json").read_text())
    assert [s["name"] for s in config["data"]["mixture"]] == list(SIZES)
    assert (tmp_path / "a" / "tokenizer.json").read_text() == TOKENIZER
    train(tiny(out, tmp_path / "b", stop_at_step=5))
    resumed = train(tiny(out, tmp_path / "b", resume=True))
    assert resumed["start_step"] == 5 and resumed["finished"]
    log_b = [json.loads(l) for l in (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    assert [(r["loss"], r["tokens_per_source"], r.get("val_loss")) for r in log] == [
        (r["loss"], r["tokens_per_source"], r.get("val_loss")) for r in log_b]
    wa = load_file(str(tmp_path / "a" / "checkpoints" / "step_00000008" / "model.safetensors"))
    wb = load_file(str(tmp_path / "b" / "checkpoints" / "step_00000008" / "model.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa) and straight["tokens_seen"] == resumed["tokens_seen"]


def test_open_training_data_tells_a_token_set_from_a_mixture(sources, tmp_path):
    data, val = open_training_data(sources / "web")
    assert not isinstance(data, TokenMixture) and set(val) == {""}
    mixture = plan(sources, tmp_path, web=1.0, books=1.0)
    data, val = open_training_data(tmp_path / "m.json")
    assert isinstance(data, TokenMixture) and set(val) == {"web", "books"} and data.names == mixture.names


def test_two_rank_training_on_a_mixture_resumes_bit_identically(sources, tmp_path):
    """torchrun, 2 ranks (gloo): stopped at step 2 and resumed equals the uninterrupted run, bit for bit."""
    import os
    import subprocess
    import sys

    from pipeline.paths import REPO

    out = tmp_path / "mix.json"
    assert mix(sources, "--epochs", "web=1", "wiki=3", "books=2", "--output", str(out)) == 0
    common = ["--tokens", str(out), "--preset", "tiny", "--block-size", "16", "--batch-size", "2", "--max-steps", "4",
              "--device", "cpu", "--dtype", "float32", "--log-every", "1", "--eval-every", "2", "--eval-steps", "1",
              "--ckpt-every", "2", "--no-progress", "--prefetch", "1", "--warmup", "1", "--seed", "4"]

    def torchrun(*extra):
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
        proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                               "-m", "model.train", *common, *extra], cwd=REPO, env=env, capture_output=True,
                              text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    torchrun("--out", str(tmp_path / "a"))
    torchrun("--out", str(tmp_path / "b"), "--stop-at-step", "2")
    torchrun("--out", str(tmp_path / "b"), "--resume")
    log_a = [json.loads(l) for l in (tmp_path / "a" / "log.jsonl").read_text().splitlines()]
    log_b = [json.loads(l) for l in (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    keys = ("step", "loss", "grad_norm", "tokens", "tokens_per_source", "val_loss", "val_loss_per_source")
    assert [[r.get(k) for k in keys] for r in log_a] == [[r.get(k) for k in keys] for r in log_b]
    assert [r["step"] for r in log_a] == [1, 2, 3, 4] and log_a[-1]["tokens"] == 4 * 2 * 2 * 16
    wa = load_file(str(tmp_path / "a" / "checkpoints" / "step_00000004" / "model.safetensors"))
    wb = load_file(str(tmp_path / "b" / "checkpoints" / "step_00000004" / "model.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_ablate_checks_its_mixture_arms_before_refining(sources, tmp_path):
    import argparse

    from pipeline.ablate import _mixture_arms
    from pipeline.errors import UserError

    out = tmp_path / "mix.json"
    assert mix(sources, "--epochs", "web=1", "wiki=1", "books=1", "--output", str(out)) == 0
    assert _mixture_arms(argparse.Namespace(mixture=[f"pile={out}"])) == [("pile", str(out))]
    with pytest.raises(UserError, match="nowhere.json"):
        _mixture_arms(argparse.Namespace(mixture=[f"pile={tmp_path / 'nowhere.json'}"]))
    with pytest.raises(UserError, match="NAME=VALUE"):
        _mixture_arms(argparse.Namespace(mixture=[str(out)]))
