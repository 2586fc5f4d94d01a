"""pipeline.beam_import: the local-run import of Beam and the graph-construction shortcuts return exactly what
Beam computes without them (signatures, option views, the IPython probe, pyarrow's pandas support), and a
whole graph built with them is the same graph."""

from __future__ import annotations

import functools
import inspect
import json
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.options import pipeline_options as po
from apache_beam.transforms import core
from apache_beam.typehints import decorators

from pipeline import beam_import
from pipeline.beam_import import SignatureMemo, cached_view_as, no_ipython_unless_imported

REPO = Path(__file__).resolve().parents[2]


def _python(code: str, env_extra=None) -> str:
    """Run ``code`` in a fresh interpreter in the repository; return its stdout (a failure fails the test)."""
    import os

    env = dict(os.environ, **(env_extra or {}))
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


# ---- signatures ------------------------------------------------------------------------------------------

class _Fn(beam.DoFn):
    def process(self, element, timestamp=beam.DoFn.TimestampParam):
        yield element

    def helper(self, a: int, b: str = "x", *rest, key=None, **kw) -> str:
        return b


def _plain(a, b=1, *, c=2):
    return a


def test_signature_memo_gives_beams_answer_and_notices_changes():
    original_sig, original_args = inspect.signature, core.get_function_args_defaults
    calls = []

    def counting(func):
        calls.append(func)
        return original_sig(func)

    memo = SignatureMemo(counting, original_args)
    fn = _Fn()
    for func in (_plain, fn.process, fn.helper, _Fn.helper, len, str.upper, functools.partial(_plain, 1), _Fn):
        assert memo.get_signature(func) == original_sig(func), func
        assert memo.get_signature(func) == original_sig(func), func
    assert memo.get_signature(fn.process) is memo.get_signature(_Fn().process)  # bound to any instance: one entry
    assert str(memo.get_signature(fn.helper)) != str(memo.get_signature(_Fn.helper))  # bound drops self
    n = len(calls)
    memo.get_signature(_plain)
    assert len(calls) == n  # remembered

    def changing(a, b=1):
        return a

    assert str(memo.get_signature(changing)) == "(a, b=1)"
    changing.__defaults__ = (5,)
    assert str(memo.get_signature(changing)) == "(a, b=5)"
    changing.__annotations__["a"] = int
    assert str(memo.get_signature(changing)) == "(a: int, b=5)"
    changing.__code__ = _plain.__code__
    changing.__defaults__ = (1,)
    changing.__kwdefaults__ = {"c": 3}
    assert memo.get_signature(changing) == original_sig(changing)

    @functools.wraps(_plain)
    def wrapper(*args, **kwargs):
        return _plain(*args, **kwargs)

    assert memo.get_signature(wrapper) == original_sig(wrapper)  # follows __wrapped__ (not memoized)
    wrapper.__signature__ = inspect.Signature()
    assert memo.get_signature(wrapper) == inspect.Signature()

    # (args, defaults): Beam's answer, fresh lists every time
    for func in (_plain, fn.process, fn.helper, len):
        assert memo.get_function_args_defaults(func) == original_args(func)
    args, defaults = memo.get_function_args_defaults(fn.process)
    assert args == ["element", "timestamp"] and defaults == [beam.DoFn.TimestampParam]
    args.append("junk")
    assert memo.get_function_args_defaults(fn.process)[0] == ["element", "timestamp"]


def test_installed_shortcuts_are_beams_functions_wrapped():
    beam_import.speed_up_graph_construction()
    beam_import.speed_up_graph_construction()  # idempotent
    assert isinstance(decorators.get_signature.__self__, SignatureMemo)
    assert core.get_signature == decorators.get_signature
    assert po.PipelineOptions.view_as.__wrapped_beam__ is not None
    from apache_beam.utils import interactive_utils

    assert interactive_utils.is_in_ipython.__wrapped_beam__ is not None
    assert beam.pipeline.is_in_ipython is interactive_utils.is_in_ipython
    # a stateful DoFn is still seen as one (state specs come from the memoized signatures)
    from apache_beam.transforms import userstate
    from apache_beam.transforms.userstate import BagStateSpec

    class Stateful(beam.DoFn):
        BAG = BagStateSpec("bag", beam.coders.StrUtf8Coder())

        def process(self, kv, bag=beam.DoFn.StateParam(BAG)):
            yield kv

    assert userstate.is_stateful_dofn(Stateful()) and not userstate.is_stateful_dofn(_Fn())


# ---- option views ----------------------------------------------------------------------------------------

_FLAGS = ["--runner=FnApiRunner", "--direct_num_workers=2", "--experiments=a", "--experiments=b",
          "--type_check_strictness=ALL_REQUIRED", "--save_main_session", "--unknown_flag=1"]
_VIEWED = (po.StandardOptions, po.TypeOptions, po.DirectOptions, po.DebugOptions, po.SetupOptions)


def test_cached_views_equal_beams_and_share_nothing_between_options():
    original = getattr(po.PipelineOptions.view_as, "__wrapped_beam__", po.PipelineOptions.view_as)
    cached = cached_view_as(original, _VIEWED, po.PipelineOptions.__init__)
    for _ in range(2):  # first parse, then the cached one
        plain, fast = po.PipelineOptions(list(_FLAGS)), po.PipelineOptions(list(_FLAGS))
        for cls in _VIEWED + (po.GoogleCloudOptions, po.WorkerOptions):
            a, b = original(plain, cls), cached(fast, cls)
            assert type(a) is type(b) is cls
            assert {k: getattr(a, k) for k in a._visible_option_list()} == {k: getattr(b, k) for k in b._visible_option_list()}
        assert plain.get_all_options() == fast.get_all_options()
    one, two = po.PipelineOptions(list(_FLAGS)), po.PipelineOptions(list(_FLAGS))
    cached(one, po.DebugOptions).add_experiment("only_one")
    assert "only_one" in cached(one, po.DebugOptions).experiments  # views of one object share its values
    assert "only_one" not in cached(two, po.DebugOptions).experiments  # other objects do not
    cached(one, po.StandardOptions).runner = "PortableRunner"
    assert cached(one, po.StandardOptions).runner == "PortableRunner" == one.view_as(po.StandardOptions).runner
    assert cached(two, po.StandardOptions).runner == "FnApiRunner"
    assert original(po.PipelineOptions(list(_FLAGS)), po.StandardOptions).runner == "FnApiRunner"


# ---- IPython ---------------------------------------------------------------------------------------------

def test_ipython_probe(monkeypatch):
    asked = []

    def beams(**_):
        asked.append(1)
        return True

    probe = no_ipython_unless_imported(beams)
    monkeypatch.delitem(sys.modules, "IPython", raising=False)
    assert probe() is False and not asked and "IPython" not in sys.modules
    monkeypatch.setitem(sys.modules, "IPython", types.ModuleType("IPython"))
    assert probe() is True and asked  # inside IPython, Beam's own check decides


# ---- whole runs, in fresh interpreters -------------------------------------------------------------------

_PANDAS_LATER = """
    import sys, json
    if LOCAL:
        from pipeline.beam_import import import_beam_for_local_run
        assert import_beam_for_local_run(["/tmp/x"], [])
    else:
        import apache_beam
    import pyarrow as pa
    from pipeline.document import build_schema, rows_to_table
    rows_to_table([{"text": "a", "url": None}], build_schema({"x": pa.int64()}))  # as shards are written
    pa.array(["a", None], type=pa.string())
    before = "pandas" in sys.modules
    if TO_PANDAS:
        df = pa.table({"a": [1, 2]}).to_pandas()  # pyarrow imports pandas itself when it needs it
    import pandas as pd  # or someone else imports pandas: pyarrow's pandas support is back on at once
    cat = pa.array(pd.Series(pd.Categorical(["x", "y", "x"])))
    ser = pa.array(pd.Series([1.0, None]))
    frame = pa.Table.from_pandas(pd.DataFrame({"a": ["x", None], "b": [1, 2]}))
    print(json.dumps([before, str(cat.type), ser.null_count, str(frame.schema), pa.table({"a": [1]}).to_pandas().shape,
                      type(pd.__spec__.loader).__name__]))
"""


@pytest.mark.parametrize("to_pandas", [True, False])
def test_local_run_import_keeps_pandas_out_until_it_is_used(to_pandas):
    def run(local):
        code = _PANDAS_LATER.replace("LOCAL", str(local)).replace("TO_PANDAS", str(to_pandas))
        return json.loads(_python(code))

    local, plain = run(True), run(False)
    assert local[0] is False and plain[0] is True  # the shard writer's pa.array no longer imports pandas
    assert local[1:] == plain[1:]  # and everything pandas-related behaves as with Beam's plain import


def test_local_runs_only():
    assert beam_import.is_local_run(["/x", "https://h/x.warc.gz"], ["--runner=FnApiRunner"])
    assert not beam_import.is_local_run(["gs://b/x"], [])
    assert not beam_import.is_local_run(["/x"], ["--runner", "DataflowRunner"])


_GRAPH = """
    import sys, hashlib
    if PLAIN:
        import apache_beam  # Beam's own import: every client, beartype and httplib2 loaded as Beam loads them
    else:
        from pipeline.beam_import import import_beam_for_local_run
        assert import_beam_for_local_run(["/tmp/x"], [])
    from pipeline import beam_import, runtime
    if PLAIN:
        beam_import._installed = True  # Beam without the shortcuts
    from apache_beam.portability.api import beam_runner_api_pb2
    from pipeline.beam import RefineGraph
    from pipeline.config import get_pipeline
    spec = get_pipeline("refinedweb_fast")
    p = runtime.new_pipeline(options=runtime.make_options([]))
    p | "Refine" >> RefineGraph(spec.build_stages(), ["/tmp/a.warc.gz", "/tmp/b.warc.gz"], "/tmp/out", spec.output,
                                {"pipeline": "x"}, spread=True)
    proto = p.to_runner_api()
    for t in proto.components.transforms.values():  # pickled functions differ between processes: drop them
        if t.spec.urn == "beam:transform:pardo:v1":
            pardo = beam_runner_api_pb2.ParDoPayload.FromString(t.spec.payload)
            pardo.do_fn.payload = b""
            t.spec.payload = pardo.SerializeToString(deterministic=True)
        else:
            t.spec.payload = b""
    for c in proto.components.coders.values():
        c.spec.payload = b""
    for w in proto.components.windowing_strategies.values():
        w.window_fn.payload = b""
    for e in proto.components.environments.values():
        e.payload = b""
        del e.dependencies[:]
    print(len(proto.components.transforms), hashlib.sha256(proto.SerializeToString(deterministic=True)).hexdigest(),
          "IPython" in sys.modules)
"""


def test_the_graph_is_the_same_with_and_without_the_shortcuts(shared_data):
    env = {"WEBREFINERY_DATA": str(shared_data)}
    plain = _python(_GRAPH.replace("PLAIN", "True"), env).split()
    fast = _python(_GRAPH.replace("PLAIN", "False"), env).split()
    # same transforms, coders (inferred types), state/timer specs, windowing; IPython never imported
    assert int(plain[0]) > 200 and plain[:2] == fast[:2]
    assert fast[2] == "False"


def _refinery_run(pipeline: str, inputs, out: Path, data: Path, *, as_before: bool, limit: int) -> None:
    """``refinery run`` in a fresh interpreter; ``as_before``: Beam imported plainly first (so the local-run
    import is skipped) and no shortcuts, i.e. the implementation before them."""
    import os

    prelude = "import apache_beam; " if as_before else ""
    code = f"import sys; {prelude}from pipeline.cli import main; sys.exit(main())"
    args = ["run", pipeline, *[a for p in inputs for a in ("--input", str(p))], "--output", str(out), "--force",
            "--limit", str(limit)]
    env = dict(os.environ, WEBREFINERY_DATA=str(data), REFINERY_PROGRESS="0",
               **({"WEBREFINERY_BEAM_SHORTCUTS": "0"} if as_before else {}))
    proc = subprocess.run([sys.executable, "-c", code, *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]


def _outputs(out: Path):
    files = {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    report = json.loads(files.pop("report.json"))
    report.pop("seconds")
    return files, report


@pytest.mark.parametrize("pipeline", ["rw_filtered", "refinedweb_fast"])
def test_runs_write_the_same_bytes_as_before_the_shortcuts(pipeline, shared_data, tmp_path):
    inputs = [shared_data / "warc" / "web-pages-mixed.warc.gz", shared_data / "warc" / "example-com.warc.gz"]
    _refinery_run(pipeline, inputs, tmp_path / "before", shared_data, as_before=True, limit=80)
    _refinery_run(pipeline, inputs, tmp_path / "now", shared_data, as_before=False, limit=80)
    before, now = _outputs(tmp_path / "before"), _outputs(tmp_path / "now")
    assert sorted(before[0]) == sorted(now[0]) and any(name.startswith("documents/") for name in now[0])
    for name in before[0]:  # shards, rejected shards, manifest.json, funnel.png
        assert before[0][name] == now[0][name], name
    assert before[1] == now[1] and now[1]["output_documents"] > 0  # report.json but for the seconds it took


# ---- libraries Beam imports but a local run never calls ----------------------------------------------------

_DEFERRED = """
    import sys, json
    from pipeline.beam_import import import_beam_for_local_run
    assert import_beam_for_local_run(["/tmp/x"], [])
    from pipeline import beam_import
    deferred = type(sys.modules["httplib2"]) is beam_import._DeferredModule
    namespace_before = len(vars(sys.modules["httplib2"]))  # objsize reads namespaces: that runs nothing
    still_deferred = type(sys.modules["httplib2"]) is beam_import._DeferredModule
    from apache_beam.internal import http_client
    http = http_client.get_new_http()  # Beam's own use: the module runs now, once, as the one object
    import httplib2
    print(json.dumps([deferred, still_deferred, namespace_before < 10, type(httplib2).__name__,
                      type(http).__name__, httplib2 is sys.modules["httplib2"], type(httplib2.__spec__.loader).__name__,
                      hasattr(httplib2, "ProxyInfo"), "pyparsing" in sys.modules]))
"""


def test_httplib2_runs_on_first_use_and_is_then_the_plain_module():
    deferred, still, small, kind, http, same, loader, has, pyparsing = json.loads(_python(_DEFERRED))
    assert deferred and still and small
    assert (kind, http, same, loader, has, pyparsing) == ("module", "Http", True, "SourceFileLoader", True, True)


def test_a_deferred_module_that_fails_is_gone_like_a_failed_import(tmp_path, monkeypatch):
    (tmp_path / "wr_broken_lib.py").write_text("X = 1\nraise RuntimeError('broken at import')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(beam_import, "DEFERRED_FOR_LOCAL_RUNS", ("wr_broken_lib",))
    finder = beam_import._ReportMissing()
    sys.meta_path.insert(0, finder)
    try:
        import wr_broken_lib  # noqa: F401  (deferred: nothing ran yet)
    finally:
        sys.meta_path.remove(finder)
    module = sys.modules["wr_broken_lib"]
    assert type(module) is beam_import._DeferredModule
    with pytest.raises(RuntimeError, match="broken at import"):
        module.X  # noqa: B018
    assert "wr_broken_lib" not in sys.modules


_BEARTYPE = """
    import sys, json, typing
    LOCAL = {local}
    if LOCAL:
        from pipeline.beam_import import import_beam_for_local_run
        assert import_beam_for_local_run(["/tmp/x"], [])
    else:
        import apache_beam
    from apache_beam.typehints import typehints as th
    before = "beartype" in sys.modules
    stand_ins_gone = not any(type(m).__name__ == "_StandIn" for m in list(sys.modules.values()))
    class A: pass
    class B(A): pass
    pairs = [(int, object), (str, int), (B, A), (A, B), (bool, int), (type(None), int), (list, typing.Iterable),
             (bytes, str), (dict, typing.Mapping), (int, typing.Callable)]
    answers = [th.is_consistent_with(a, b, use_beartype=True) for a, b in pairs]
    from apache_beam.transforms import util
    crypto_before = "cryptography" in sys.modules
    fernet = util.Fernet(b"MDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDA=")  # as GroupByEncryptedKey makes one
    secret = fernet.decrypt(fernet.encrypt(b"key"))
    print(json.dumps([before, stand_ins_gone, answers, th.is_subhint.__module__, th.BeartypeDoorException.__module__,
                      crypto_before, secret.decode(), util.Fernet.__module__, type(fernet).__name__]))
"""


def test_beartype_and_fernet_are_imported_on_first_use_with_the_same_answers():
    local = json.loads(_python(_BEARTYPE.format(local=True)))
    plain = json.loads(_python(_BEARTYPE.format(local=False)))
    assert local[0] is False and plain[0] is True  # a local run imports beartype only when Beam first needs it
    assert local[1] and plain[1]
    assert local[2] == plain[2] and True in local[2] and False in local[2]
    assert local[5] is False and plain[5] is True  # cryptography likewise
    assert local[3:5] + local[6:] == plain[3:5] + plain[6:]  # then Beam's modules hold the real names
    assert local[6:] == ["key", "cryptography.fernet", "Fernet"]
