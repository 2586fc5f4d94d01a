"""The notebooks in notebooks/ run end to end on small real inputs made with the project's own commands.

A session fixture builds the inputs once (about a minute on two free cores): ``refinery run refinedweb_fast``
on three shared inputs, ``refinery train-tokenizer`` (vocabulary 1,024), ``refinery tokenize``, ``refinery
pretrain --preset tiny`` for 20 CPU steps, ``refinery eval`` with a small ``--limit``, and ``refinery ablate``
at toy scale. Each notebook then runs on a fresh kernel (nbclient) with the WEBREFINERY_* variables pointing
at those folders and WEBREFINERY_FIGURES at a temporary folder: any cell error fails the test, and the key
figures must have been written as PNGs.

The kernel: the test writes its own kernelspec (into a temporary JUPYTER_PATH) whose command is this
interpreter, ``sys.executable -m ipykernel_launcher``, so the notebooks run in the same environment as pytest
whatever kernels the machine has installed; no kernelspec install step is needed. Kernels talk over Unix
sockets, not TCP ports, so concurrent kernels on a busy machine cannot collide.

The committed notebooks must carry no outputs and no machine paths (``test_committed_notebooks_are_clean``).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import sys
import tempfile
from pathlib import Path

import nbformat
import pytest
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

from pipeline.cli import main as refinery
from pipeline.paths import REPO, require_shared

NOTEBOOKS = REPO / "notebooks"
KERNEL_NAME = "webrefinery-test"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# notebook -> figures it must save (names given to _common.save_figure)
EXPECTED_FIGURES = {
    "01_explore_corpus": ["01_funnel", "01_rejections", "01_thresholds", "01_languages", "01_domains"],
    "02_dedup_clusters": ["02_cluster_sizes", "02_s_curve"],
    "03_tokenizer": ["03_fertility", "03_coverage"],
    "04_training_and_eval": ["04_loss_lr", "04_throughput", "04_eval", "04_ablation"],
}
# a machine path in a committed notebook (outputs, or a cell someone ran with their own paths)
MACHINE_PATH = re.compile(r"(/work/|/home/|/Users/|/tmp/|/root/|/private/var/|[A-Za-z]:\\\\)")


def _common():
    spec = importlib.util.spec_from_file_location("notebooks_common", NOTEBOOKS / "_common.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def inputs(tmp_path_factory):
    """Real small inputs for every notebook, made with the `refinery` command (in this process)."""
    base = tmp_path_factory.mktemp("notebook-inputs")
    out, tok, tokens, run, abl = (str(base / n) for n in ("out", "tok", "tokens", "run", "ablation"))
    warc = lambda name: str(require_shared("warc", name))  # noqa: E731
    cc = lambda name: str(require_shared("cc", name))  # noqa: E731
    assert refinery(["run", "refinedweb_fast", "--input", warc("news-articles-aeb.warc.gz"), warc("web-pages-mixed.warc.gz"),
                     cc("cc-main-2019-30-extracted.jsonl.gz"), "--output", out]) == 0
    assert refinery(["train-tokenizer", "--input", f"{out}/documents", "--output", tok, "--vocab-size", "1024",
                     "--no-progress"]) == 0
    assert refinery(["tokenize", "--input", f"{out}/documents", "--tokenizer", f"{tok}/tokenizer.json", "--output", tokens,
                     "--val-fraction", "0.1", "--no-progress"]) == 0
    assert refinery(["pretrain", "--tokens", tokens, "--out", run, "--preset", "tiny", "--max-steps", "20",
                     "--batch-size", "4", "--block-size", "64", "--warmup", "4", "--eval-every", "10", "--eval-steps", "2",
                     "--log-every", "2", "--device", "cpu", "--no-progress"]) == 0
    assert refinery(["eval", "--checkpoint", run, "--tasks", "bpb,hellaswag,arc_easy,piqa", "--limit", "4",
                     "--tokens", tokens, "--max-tokens", "1500", "--device", "cpu"]) == 0
    # a short held-out text keeps the ablation's bits-per-byte cheap on CPU
    held_out = base / "held-out.txt"
    held_out.write_text(require_shared("text", "botchan.txt").read_text(encoding="utf-8")[:6000], encoding="utf-8")
    assert refinery(["ablate", "--input", cc("ccnet-head-en-0091.jsonl.gz"), cc("ccnet-head-en-0174.jsonl.gz"),
                     "--output", abl, "--pipelines", "rw_raw,rw_filtered", "--vocab-size", "512", "--max-steps", "3",
                     "--batch-size", "2", "--block-size", "64", "--device", "cpu", "--tasks", "bpb,hellaswag",
                     "--eval-limit", "4", "--text", str(held_out)]) == 0
    return {"WEBREFINERY_RUN": out, "WEBREFINERY_TOK": tok, "WEBREFINERY_TRAIN_RUN": run, "WEBREFINERY_ABLATION": abl}


@pytest.fixture
def kernel_env(tmp_path, monkeypatch):
    """A kernelspec that runs this interpreter, found first through JUPYTER_PATH; the repository on PYTHONPATH;
    Jupyter's runtime files and IPython's profile in the test's own folder."""
    spec_dir = tmp_path / "jupyter" / "kernels" / KERNEL_NAME
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "webrefinery tests", "language": "python",
    }))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "jupyter-runtime"))  # connection files
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))  # no user profile or startup scripts
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]))
    return tmp_path


def _execute(name: str, cwd: Path, tags=None) -> nbformat.NotebookNode:
    """Run notebook ``name`` on a fresh kernel (only its code cells tagged with one of ``tags``, when given).

    The kernel talks over Unix sockets (transport "ipc") in a short private folder: no TCP ports to race for
    with other kernels on a busy machine."""
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    if tags:
        nb.cells = [c for c in nb.cells if c.cell_type == "code" and set(tags) & set(c.metadata.get("tags", []))]
        assert nb.cells, f"{name} has no cell tagged {tags}"
    with tempfile.TemporaryDirectory(prefix="wr-kernel-") as sockets:  # short: socket paths are limited to ~100 bytes
        km = KernelManager(kernel_name=KERNEL_NAME, transport="ipc", ip=os.path.join(sockets, "k"))
        # iopub_timeout: how long nbclient waits for a cell's output messages after the cell has finished. Its
        # default (4 s) silently drops late output on a loaded machine (a missing printed line failed this test
        # once in CI); wait longer, and fail loudly instead of dropping.
        client = NotebookClient(nb, km=km, timeout=600, startup_timeout=300, iopub_timeout=120,
                                raise_on_iopub_timeout=True, resources={"metadata": {"path": str(cwd)}})
        client.execute()  # raises CellExecutionError (with the cell and traceback) if any cell fails
    return nb


def _outputs(nb) -> list:
    return [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]


def _text_of(nb) -> str:
    parts = []
    for o in _outputs(nb):
        if o.output_type == "stream":
            parts.append(o.text)
        for kind in ("text/plain", "text/html"):
            if kind in o.get("data", {}):
                parts.append(o["data"][kind])
    return "\n".join(parts)


def test_committed_notebooks_are_clean():
    found = sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb"))
    assert found == sorted(EXPECTED_FIGURES), found
    readme = (NOTEBOOKS / "README.md").read_text(encoding="utf-8")
    for name in found:
        path = NOTEBOOKS / f"{name}.ipynb"
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert code, name
        ids = [c.get("id") for c in nb.cells]
        assert all(ids) and len(set(ids)) == len(ids), f"{name}: every cell needs its own id (nbformat 4.5)"
        for cell in code:
            assert cell.get("outputs") == [], f"{name}: a committed cell has outputs (strip them)"
            assert cell.get("execution_count") is None, f"{name}: a committed cell has an execution count"
        raw = path.read_text(encoding="utf-8")
        assert not MACHINE_PATH.search(raw), f"{name}: machine path {MACHINE_PATH.search(raw).group(0)!r} in the notebook"
        assert nb.metadata.get("kernelspec", {}).get("name") == "python3"
        assert name in readme, f"README.md does not describe {name}"
    for var in ("WEBREFINERY_RUN", "WEBREFINERY_TOK", "WEBREFINERY_TRAIN_RUN", "WEBREFINERY_ABLATION", "WEBREFINERY_DATA"):
        assert var in readme


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(EXPECTED_FIGURES))
def test_notebook_runs_and_draws_its_figures(name, inputs, kernel_env, monkeypatch):
    figures = kernel_env / "figures"
    for var, value in inputs.items():
        monkeypatch.setenv(var, value)
    monkeypatch.setenv("WEBREFINERY_FIGURES", str(figures))
    nb = _execute(name, NOTEBOOKS)
    outputs = _outputs(nb)
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= len(EXPECTED_FIGURES[name]), f"{name}: {len(images)} inline pictures"
    for fig in EXPECTED_FIGURES[name]:
        png = figures / f"{fig}.png"
        assert png.exists(), f"{name} did not draw {fig}"
        data = png.read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 10_000, f"{fig}.png is not a real picture ({len(data)} bytes)"
    text = _text_of(nb)
    if name == "01_explore_corpus":
        report = json.load(open(Path(inputs["WEBREFINERY_RUN"]) / "report.json"))
        assert "row counts agree with report.json" in text
        assert f"{report['output_documents']:,} documents kept" in text
        assert "gopher_quality:min_words" in text  # a rejection reason with its samples
    elif name == "02_dedup_clusters":
        assert re.search(r"[\d,]+ documents reached minhash_dedup", text)
        assert "minhash_cluster_size agrees with the members found" in text
    elif name == "03_tokenizer":
        assert "GPT-2  vocabulary 50,257 tokens" in text
        assert re.search(r"documents per language: en \d+", text)
    elif name == "04_training_and_eval":
        assert "The city council voted on" in text  # the generations table
        assert "rw_filtered" in text  # the ablation table
        assert "No ablation results" not in text


@pytest.mark.slow
def test_training_notebook_says_so_when_there_is_no_ablation(inputs, kernel_env, monkeypatch):
    """The optional ablation input: absent -> a visible note, no error (setup and ablation cells only)."""
    figures = kernel_env / "figures"
    for var, value in inputs.items():
        monkeypatch.setenv(var, value)
    monkeypatch.setenv("WEBREFINERY_ABLATION", str(kernel_env / "no-such-ablation"))
    monkeypatch.setenv("WEBREFINERY_FIGURES", str(figures))
    nb = _execute("04_training_and_eval", NOTEBOOKS, tags=("setup", "ablation"))
    text = _text_of(nb)
    assert "No ablation results at" in text and "refinery ablate" in text
    assert not (figures / "04_ablation.png").exists()


def test_a_missing_input_names_the_variable_and_the_command(tmp_path, monkeypatch):
    common = _common()
    monkeypatch.setenv("WEBREFINERY_RUN", str(tmp_path / "nothing-here"))
    with pytest.raises(FileNotFoundError, match="WEBREFINERY_RUN.*make run"):
        common.run_dir()
    monkeypatch.setenv("WEBREFINERY_TOK", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="WEBREFINERY_TOK.*train-tokenizer"):
        common.tokenizer_file()
    monkeypatch.setenv("WEBREFINERY_ABLATION", str(tmp_path / "absent"))
    assert common.ablation_file() is None  # optional: the notebook shows a note instead


def test_relative_settings_resolve_from_the_repository(tmp_path, monkeypatch):
    common = _common()
    monkeypatch.chdir(tmp_path)  # as a kernel started in notebooks/ would be: the folder is not here
    monkeypatch.delenv("WEBREFINERY_RUN", raising=False)
    assert common.input_path("WEBREFINERY_RUN") == REPO / "out"
    (tmp_path / "mine").mkdir()
    monkeypatch.setenv("WEBREFINERY_RUN", "mine")  # but a relative path that exists here wins
    assert common.input_path("WEBREFINERY_RUN") == (tmp_path / "mine").resolve()
    monkeypatch.setenv("WEBREFINERY_FIGURES", str(tmp_path / "figs"))
    from matplotlib.figure import Figure

    fig = Figure()
    fig.subplots().plot([0, 1], [1, 0])
    saved = common.save_figure(fig, "probe")
    assert saved == tmp_path / "figs" / "probe.png" and saved.read_bytes()[:8] == PNG_MAGIC
