"""Golden outputs: every pipeline of pipelines.yaml (and the tokenizer chain) on a fixed slice of the shared
data, reduced to the SHA-256 of every shard file and the report's counts.

Refactors must keep outputs byte-identical (README, "Standards"). ``tests/e2e/test_golden.py`` reruns this
and compares with ``golden_outputs.json``, which was written by the commit before the structural refactor
(#18), with the inputs read by a relative path (see ``compute``). Regenerate it only when a change is *meant* to change outputs (or a pinned dependency moved), and
say so in the commit:

    WEBREFINERY_DATA=../shared/data .venv/bin/python tests/e2e/golden.py --write
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List

HERE = Path(__file__).resolve().parent
GOLDEN_FILE = HERE / "golden_outputs.json"
PIPELINES = ["rw_raw", "rw_filtered", "refinedweb", "refinedweb_fast", "fineweb", "refinedweb_tokens"]
# Mixed languages and page types; the first records of each file, in this order.
WARCS = ["web-pages-mixed.warc.gz", "cc-main-2020-34-excerpt.warc.gz", "news-articles-aeb.warc.gz", "serp-archive-0001.warc.gz"]
LIMIT = 400


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _files(root: Path) -> Dict[str, str]:
    """Hashes of every data file under ``root`` (shards, token shards, tokenizer), not timing-bearing files."""
    out = {}
    for path in sorted(root.rglob("*")):
        if not path.is_file():
            continue
        rel = path.relative_to(root).as_posix()
        if path.name in ("report.json", "manifest.json", "report.html") or path.name.endswith("_report.json") or path.suffix == ".png":
            continue
        out[rel] = _sha(path)
    return out


def _report_counts(out: Path) -> Dict:
    report = json.loads((out / "report.json").read_text())
    return {k: report[k] for k in ("input_documents", "output_documents", "rejected_documents", "stages")}


def _manifest_rows(out: Path) -> Dict:
    m = json.loads((out / "manifest.json").read_text())
    return {kind: [[e["name"], e.get("rows")] for e in m.get(kind, [])] for kind in ("documents", "rejected")}


def _refinery(*args: str, cwd: Path, repo: Path) -> None:
    env = dict(os.environ, REFINERY_PROGRESS="0", PYTHONPATH=str(repo))
    cmd = [sys.executable, "-m", "pipeline.cli", *args]
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")


def compute(work: Path, data: Path, repo: Path) -> Dict:
    """Run everything into ``work``; return {name: {files, counts, rows}}.

    The inputs are read through ``work/data`` (a link to ``data``) by a relative path, run from ``work``:
    shards record each document's ``source`` as given, and that path is part of the key that picks its
    shard, so absolute paths would tie the hashes to where the checkout and the data happen to live.
    """
    work.mkdir(parents=True, exist_ok=True)
    link = work / "data"
    if not link.exists():
        link.symlink_to(Path(data).resolve(), target_is_directory=True)
    warcs = [f"data/warc/{w}" for w in WARCS]
    result: Dict[str, Dict] = {}
    tok_dir = work / "tok"
    for name in PIPELINES:
        out = work / name
        args: List[str] = ["run", name, "--input", *warcs, "--output", str(out), "--limit", str(LIMIT), "--no-funnel"]
        if name == "refinedweb_tokens":
            os.environ["WEBREFINERY_TOKENIZER"] = str(tok_dir / "tokenizer.json")
            os.environ["WEBREFINERY_TOKENS"] = str(work / "rw_tokens_tokens")
        _refinery(*args, cwd=work, repo=repo)
        result[name] = {"files": _files(out), "counts": _report_counts(out), "rows": _manifest_rows(out)}
        if name == "refinedweb_fast":  # the tokenizer chain on this run's shards, before refinedweb_tokens needs it
            _refinery("train-tokenizer", "--input", str(out / "documents"), "--output", str(tok_dir), "--vocab-size", "1024", cwd=work, repo=repo)
            _refinery("tokenize", "--input", str(out / "documents"), "--tokenizer", str(tok_dir / "tokenizer.json"),
                      "--output", str(work / "tokens"), cwd=work, repo=repo)
            result["train-tokenizer"] = {"files": _files(tok_dir)}
            result["tokenize"] = {"files": _files(work / "tokens")}
    result["refinedweb_tokens:tokens"] = {"files": _files(work / "rw_tokens_tokens")}
    return result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--write", action="store_true", help=f"write {GOLDEN_FILE.name} (otherwise print a diff summary)")
    ap.add_argument("--repo", default=str(HERE.parents[1]), help="checkout whose code runs (default: this one)")
    ap.add_argument("--keep", default=None, help="keep outputs in this folder")
    args = ap.parse_args(argv)
    from pipeline.paths import require_shared

    data = require_shared()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.keep or tmp)
        got = compute(work, data, Path(args.repo))
    if args.write:
        GOLDEN_FILE.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
        print(f"wrote {GOLDEN_FILE}")
        return 0
    want = json.loads(GOLDEN_FILE.read_text())
    bad = [k for k in want if want[k] != got.get(k)]
    print("identical" if not bad else f"differs: {bad}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
