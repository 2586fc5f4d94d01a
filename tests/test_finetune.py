"""Tests of model/finetune/: SST-2 and WNUT-17 fine-tuning of a tiny pretrained model on CPU, the scorers
(against seqeval), LoRA, exact resume, Hugging Face export and the user-facing errors."""

from __future__ import annotations

import json
import random

import pytest
import torch

from model.errors import UserError
from model.finetune.data import load_task
from model.finetune.metrics import classification_scores, entity_scores, report_table
from model.finetune.train import FinetuneConfig, finetune

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SST2_MARGIN = 0.05  # dev accuracy must beat the majority class (50.9%) by at least 5 points


def ft(base, task, out, **kw) -> FinetuneConfig:
    values = dict(checkpoint=str(base), task=task, out=str(out), device="cpu", dtype="float32", progress=False,
                  seed=3, log_every=25, max_length=64, batch_size=16)
    values.update(kw)
    return FinetuneConfig(**values)


def test_sst2_full_finetune_beats_the_majority_class(tiny_causal_run, tmp_path, shared_data):
    out = tmp_path / "sst2"
    summary = finetune(ft(tiny_causal_run, "sst2", out, max_steps=300, lr=2e-3, eval_every=100, limit_train=8000))
    assert summary["finished"] and summary["trainable_params"] == summary["total_params"]
    metrics = json.loads((out / "metrics.json").read_text())
    dev = metrics["dev"]
    assert dev["n"] == 872 and abs(dev["majority_baseline"] - 444 / 872) < 1e-12
    assert dev["accuracy"] > dev["majority_baseline"] + SST2_MARGIN, dev
    assert dev["macro_f1"] > 0.5, dev  # both classes predicted, not a constant answer
    assert summary["best_dev_accuracy"] == dev["accuracy"]
    table = (out / "report.txt").read_text()
    assert "precision" in table and "macro avg" in table and "accuracy" in table
    log = [json.loads(l) for l in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "dev_accuracy" in r] == [100, 200, 300]
    assert (out / "best" / "weights.safetensors").is_file()


def test_classification_scores_by_hand():
    s = classification_scores([0, 0, 1, 1, 1], [0, 1, 1, 1, 0], ["neg", "pos"])
    assert s["accuracy"] == 3 / 5
    assert s["per_class"]["neg"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    assert s["per_class"]["pos"]["precision"] == 2 / 3 and s["per_class"]["pos"]["recall"] == 2 / 3
    assert abs(s["macro_f1"] - (0.5 + 2 / 3) / 2) < 1e-12
    assert "neg" in report_table(s)


def test_entity_scorer_equals_seqeval_on_random_tags():
    from seqeval.metrics import classification_report

    rng = random.Random(5)
    tags = ["O", "O", "O", "B-person", "I-person", "B-location", "I-location", "B-group", "I-group"]
    true = [[rng.choice(tags) for _ in range(rng.randint(1, 15))] for _ in range(400)]
    pred = [[rng.choice(tags) if rng.random() < 0.4 else t for t in s] for s in true]
    ours = entity_scores(true, pred)
    ref = classification_report(true, pred, output_dict=True, zero_division=0)
    for name, row in {**ours["per_class"], **ours["averages"]}.items():
        assert row["support"] == ref[name]["support"], name
        for key, ref_key in (("precision", "precision"), ("recall", "recall"), ("f1", "f1-score")):
            assert abs(row[key] - ref[name][ref_key]) < 1e-12, (name, key)


def test_unknown_task_and_files_without_labels_are_clear_errors(tmp_path):
    with pytest.raises(UserError, match="unknown task 'imdb'"):
        load_task("imdb")
    no_labels = tmp_path / "plain.jsonl"
    no_labels.write_text('{"text": "a fine film"}\n{"text": "dull"}\n')
    with pytest.raises(UserError, match=r"plain.jsonl:1: row has no 'label'"):
        load_task(f"jsonl:{no_labels}")
    conll = tmp_path / "plain.conll"
    conll.write_text("Paris\nis\nnice\n")
    with pytest.raises(UserError, match=r"plain.conll:1: a CoNLL line needs a token and a tag"):
        load_task(f"conll:{conll}")
    one_label = tmp_path / "one.jsonl"
    one_label.write_text("".join(json.dumps({"text": f"t{i}", "label": "pos"}) + "\n" for i in range(10)))
    with pytest.raises(UserError, match="at least 2"):
        load_task(f"jsonl:{one_label}")
    bad_bio = tmp_path / "bad.conll"
    bad_bio.write_text("Paris\tLOC\nis\tO\n\nRome\tB-LOC\n")
    with pytest.raises(UserError, match="BIO"):
        load_task(f"conll:{bad_bio}")


def test_user_jsonl_task_infers_labels_and_holds_out_dev(tmp_path):
    path = tmp_path / "mine.jsonl"
    rows = [{"text": f"example {i}", "label": ["bad", "good", "meh"][i % 3]} for i in range(60)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    task = load_task(f"jsonl:{path}", seed=1)
    assert task.kind == "sequence" and task.labels == ["bad", "good", "meh"]
    assert len(task.train) == 54 and len(task.dev) == 6
    dev = tmp_path / "dev.jsonl"
    dev.write_text(json.dumps({"text": "x", "label": "awful"}) + "\n")
    with pytest.raises(UserError, match=r"dev labels \['awful'\] never occur"):
        load_task(f"jsonl:{path},{dev}")

