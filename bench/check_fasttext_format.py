"""Cross-check against the official fastText bindings (their own venv): our model files load in fastText, and
models trained by fastText itself (the format of DCLM's classifier) score unchanged through our stage.

Creates (or reuses) a venv with ``fasttext-wheel`` and ``numpy<2`` (the official bindings, which clash with
fasttext-predict in ``.venv``), then:

1. trains our model on the article-benchmark bodies (positives) vs real CC pages (negatives), writes it,
   and compares fastText's probabilities with ours (fasttext-predict) on 200 documents;
2. trains a fastText supervised bigram model there (``-wordNgrams 2``, labels ``__label__hq``/``__label__cc``,
   DCLM's format), and scores the same documents through ``QualityClassifierStage`` here: the probabilities
   must equal fastText's own.

    WEBREFINERY_DATA=../shared/data .venv/bin/python bench/check_fasttext_format.py [--venv /tmp/ftvenv]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATA = Path(os.environ.get("WEBREFINERY_DATA", REPO.parent / "shared" / "data")).resolve()

OFFICIAL = r"""
import json, sys, fasttext
mode, a, b, out = sys.argv[1:5]
docs = json.load(open(b))
if mode == "train":
    m = fasttext.train_supervised(input=a, wordNgrams=2, dim=32, epoch=10, lr=0.5, bucket=50000, thread=1, seed=1,
                                  verbose=0)
    m.save_model(out + ".bin")
    model = m
else:
    model = fasttext.load_model(a)
probs = []
for t in docs:
    labels, p = model.predict(t.replace("\n", " ").replace("\r", " "), k=-1)
    probs.append(dict(zip(labels, [float(x) for x in p])).get("__label__hq", 0.0))
json.dump(probs, open(out, "w"))
"""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--venv", default=os.path.join(tempfile.gettempdir(), "webrefinery-fasttext-venv"))
    args = ap.parse_args(argv)
    py = os.path.join(args.venv, "bin", "python")
    if not os.path.exists(py):
        subprocess.run([sys.executable, "-m", "venv", args.venv], check=True)
        subprocess.run([py, "-m", "pip", "install", "-q", "fasttext-wheel", "numpy<2"], check=True)
    from pipeline.quality import classifier as clf
    from pipeline.quality.stages import QualityClassifierParams, QualityClassifierStage
    from pipeline.quality.train_cli import read_corpus
    from pipeline.stages.base import apply_stage

    pos = read_corpus(str(DATA / "html" / "article-extraction-benchmark" / "ground-truth.json"))
    with gzip.open(DATA / "cc" / "cc-main-2019-30-extracted.jsonl.gz", "rt", encoding="utf-8") as fh:
        neg = [t for t in (json.loads(line).get("text") for line in fh) if t and t.strip()]
    test_docs = pos[-50:] + neg[-150:]
    with tempfile.TemporaryDirectory() as tmp:
        docs_json = os.path.join(tmp, "docs.json")
        json.dump(test_docs, open(docs_json, "w"))
        script = os.path.join(tmp, "official.py")
        open(script, "w").write(OFFICIAL)
        # 1. ours -> fastText
        ours = clf.train([("__label__hq", t) for t in pos[:-50]] + [("__label__cc", t) for t in neg[:-150]],
                         clf.TrainParams(dim=32, epoch=10, bucket=50_000))
        ours_path = os.path.join(tmp, "ours.bin")
        clf.save_model(ours, ours_path)
        subprocess.run([py, script, "load", ours_path, docs_json, os.path.join(tmp, "p1.json")], check=True)
        theirs = json.load(open(os.path.join(tmp, "p1.json")))
        model = clf.load_model(ours_path)
        mine = [clf.score(model, t, "__label__hq") for t in test_docs]
        d1 = max(abs(a - b) for a, b in zip(mine, theirs))
        print(f"our model in official fastText: max |p_fastText - p_fasttext-predict| over {len(test_docs)} documents = {d1:.2e}")
        # 2. fastText's model -> our stage
        train_txt = os.path.join(tmp, "train.txt")
        with open(train_txt, "w", encoding="utf-8") as fh:
            for label, texts in (("__label__hq", pos[:-50]), ("__label__cc", neg[:-150])):
                for t in texts:
                    fh.write(label + " " + clf.prepare_text(t) + "\n")
        out2 = os.path.join(tmp, "p2.json")
        subprocess.run([py, script, "train", train_txt, docs_json, out2], check=True)
        theirs2 = json.load(open(out2))
        stage = QualityClassifierStage(QualityClassifierParams(model_path=out2 + ".bin", threshold=0.5))
        stage.setup()
        mine2 = [apply_stage(stage, {"id": str(i), "text": t})[0]["quality_score"] for i, t in enumerate(test_docs)]
        d2 = max(abs(a - b) for a, b in zip(mine2, theirs2))
        print(f"fastText-trained bigram model through QualityClassifierStage: max |difference| = {d2:.2e} "
              f"(float32 rounding of the column: < 6e-8)")
    return 0 if d1 < 1e-5 and d2 < 1e-6 else 1


if __name__ == "__main__":
    sys.exit(main())
