"""Run one named pipeline end to end: config -> inputs -> Beam -> shards, report.json, funnel.png.

``run_pipeline`` is what ``refinery run`` calls. A run is fingerprinted (pipeline spec, input files with
sizes and modification times, limit); when OUT already holds a complete run with the same fingerprint, the
run is skipped and says so (``force=True`` reruns). Shards of a rerun are byte-identical.

Named sources: inputs given as ``NAME=PATH`` (``refinery run P --input web=crawl/*.warc.gz --input
wiki=wiki.jsonl``; a plain path after a named one belongs to the same source) give every document a
``source_name`` column and the report a funnel per source (``report.json["sources"]``). Plain paths keep
today's behaviour and bytes (no new column). All sources run through the one pipeline; sources that need
another pipeline (curated text skips extraction and URL filtering) are refined in runs of their own, then
tokenized and mixed (``refinery mix``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
import re
from typing import Any, Dict, List, Optional, Sequence, Tuple

from pipeline import report as report_mod
from pipeline.io import fs
from pipeline.config import PipelineSpec, get_pipeline

log = logging.getLogger("webrefinery")

COMMON_CRAWL_DEFAULT = "https://data.commoncrawl.org/crawl-data/CC-MAIN-2024-22/warc.paths.gz"
DEFAULT_REMOTE_LIMIT = 1000


_NAMED_INPUT = re.compile(r"^([A-Za-z][A-Za-z0-9_.-]*)=(.+)$")


def split_named_inputs(items: Sequence[str]) -> Tuple[List[str], Optional[Dict[str, List[str]]]]:
    """(plain inputs, None) or ([], {source name: its inputs, in order}) when inputs are ``NAME=PATH``."""
    from pipeline.errors import UserError

    named: Dict[str, List[str]] = {}
    current: Optional[str] = None
    plain: List[str] = []
    for item in items:
        m = _NAMED_INPUT.match(item)
        if m and not os.path.exists(item):
            current = m.group(1)
            named.setdefault(current, []).append(m.group(2))
        elif current is not None:
            named[current].append(item)
        else:
            plain.append(item)
    if named and plain:
        raise UserError(f"name every input or none: {plain[0]!r} comes before the first NAME=PATH input")
    return (plain, None) if not named else ([], named)


def expand_named_inputs(items: Sequence[str], base_url: Optional[str]) -> Tuple[List[str], Optional[Dict[str, str]]]:
    """(input files in order, {file: source name} or None for plain inputs)."""
    from pipeline.errors import UserError
    from pipeline.io.readers import expand_inputs

    plain, named = split_named_inputs(items)
    if named is None:
        return expand_inputs(list(plain), commoncrawl_base_url=base_url), None
    paths: List[str] = []
    sources: Dict[str, str] = {}
    for name, specs in named.items():
        for path in expand_inputs(list(specs), commoncrawl_base_url=base_url):
            if path in sources:
                raise UserError(f"input {path} belongs to two sources ({sources[path]!r} and {name!r})")
            sources[path] = name
            paths.append(path)
    return paths, sources


def _input_signature(path: str) -> Dict[str, Any]:
    if "://" in path:
        return {"path": path}
    st = os.stat(path)
    return {"path": os.path.abspath(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def run_fingerprint(spec: PipelineSpec, paths: Sequence[str], limit: Optional[int]) -> str:
    payload = {
        "pipeline": spec.name,
        "stages": [{"name": s.name, "params": dataclasses.asdict(s.params)} for s in spec.stages],
        "output": dataclasses.asdict(spec.output),
        "read": dataclasses.asdict(spec.read),
        "inputs": [_input_signature(p) for p in paths],
        "limit": limit,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def _completed_run(out_dir: str, fingerprint: str) -> Optional[Dict[str, Any]]:
    """The report of a complete run with this fingerprint in ``out_dir`` (local or gs://...), else None."""
    manifest = fs.join(out_dir, "manifest.json")
    if not (fs.exists(manifest) and fs.exists(fs.join(out_dir, "report.json"))):
        return None
    try:
        m = json.loads(fs.read_bytes(manifest))
    except (OSError, ValueError):
        return None
    if m.get("fingerprint") != fingerprint:
        return None
    for kind in ("documents", "rejected"):
        present = set(fs.list_files(fs.join(out_dir, kind, "*")))
        for entry in m.get(kind, []):
            if fs.join(out_dir, kind, entry["name"]) not in present:
                return None
    return report_mod.load_report(out_dir)


def run_pipeline(
    name: str,
    inputs: Sequence[str],
    out_dir: str,
    config: Optional[str] = None,
    overrides: Sequence[str] = (),
    limit: Optional[int] = None,
    beam_args: Sequence[str] = (),
    force: bool = False,
    draw: bool = True,
) -> Dict[str, Any]:
    """Run pipeline ``name`` over ``inputs`` into ``out_dir``; return the checked report."""
    from pipeline import beam as beam_mod

    spec = get_pipeline(name, config, overrides)
    paths, sources = expand_named_inputs(inputs, spec.read.commoncrawl_base_url)
    fingerprint = run_fingerprint(spec, paths, limit)
    if sources is not None:  # plain runs keep their fingerprint
        fingerprint = hashlib.sha256((fingerprint + json.dumps(sources, sort_keys=True)).encode()).hexdigest()
    if not force:
        done = _completed_run(out_dir, fingerprint)
        if done is not None:
            done["skipped"] = True
            log.warning("%s already holds a complete run of '%s' on the same inputs: skipping (use --force to rerun)", out_dir, name)
            return done

    start = time.time()
    stages = spec.build_stages()
    run_info = {
        "pipeline": name,
        "fingerprint": fingerprint,
        "inputs": len(paths),
        "stages": [{"name": s.name, "params": dataclasses.asdict(s.params)} for s in spec.stages],
    }
    if sources is not None:
        run_info["sources"] = sorted(set(sources.values()))
    counters = beam_mod.run(stages, paths, out_dir, spec.output, run_info, limit=limit, beam_args=beam_args,
                            read_params=spec.read, **({"sources": sources} if sources is not None else {}))
    report = report_mod.build_report(name, [s.name for s in stages], counters)
    report_mod.check_report(report)
    manifest = json.loads(fs.read_bytes(fs.join(out_dir, "manifest.json")))
    report["written"] = report_mod.cross_check_manifest(report, manifest)
    from pipeline.quality.summary import quality_sections

    quality = quality_sections(out_dir, run_info["stages"], manifest)  # the quality stages' section, if any
    if quality:
        report["quality"] = quality
    report["seconds"] = round(time.time() - start, 2)
    report["inputs"] = len(paths)
    report_mod.write_report(report, out_dir)
    if draw:
        report_mod.draw_funnel(report, fs.join(out_dir, "funnel.png"))
    return report
