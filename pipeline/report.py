"""The funnel: per-stage counts -> report.json and funnel.png, with the accounting invariants checked.

report.json shape (read by tools and notebooks):

    {"pipeline": str, "input_documents": int, "output_documents": int,
     "stages": [{"name": str, "in": int, "kept": int, "rejected": {reason: int}}], ...}

Invariants: ``in == kept + sum(rejected)`` for every stage, each stage's ``in`` equals the previous stage's
``kept``, and ``input_documents == output_documents + all rejections``. A run with named inputs
(``--input web=... --input wiki=...``) adds ``"sources": {name: {...same shape...}}``: the funnel of each
source, which must satisfy the same invariants and add up to the total, stage by stage and reason by reason. ``check_report`` raises
``AccountingError`` when one fails; the run then fails loudly instead of publishing a wrong funnel.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, Mapping, Optional, Sequence

# RefinedWeb (Penedo et al. 2023, Fig. 2 / REFERENCE.md): % of Common Crawl kept after each stage.
# Documents up to language ID, tokens after. Keys are our stage names.
PAPER_FUNNEL = {
    "url_filter": 97.76,
    "extract": 96.31,
    "langid": 47.51,
    "gopher_repetition": 35.97,
    "gopher_quality": 30.15,
    "line_corrections": 23.34,
    "minhash_dedup": 14.50,
    "substring_dedup": 11.67,
}


class AccountingError(RuntimeError):
    """The counts do not add up: a document was lost or counted twice."""


def build_report(pipeline: str, stage_names: Sequence[str], counters: Mapping[str, int], read_stage: str = "read") -> Dict[str, Any]:
    """Turn ``<stage>|in``/``<stage>|kept``/``<stage>|rejected|<reason>`` counters into the report dict."""
    stages: List[Dict[str, Any]] = []
    for name in [read_stage, *stage_names]:
        rejected: Dict[str, int] = {}
        prefix = f"{name}|rejected|"
        for key, value in counters.items():
            if key.startswith(prefix) and value:
                rejected[key[len(prefix):]] = int(value)
        stages.append({
            "name": name,
            "in": int(counters.get(f"{name}|in", 0)),
            "kept": int(counters.get(f"{name}|kept", 0)),
            "rejected": dict(sorted(rejected.items(), key=lambda kv: (-kv[1], kv[0]))),
        })
    input_documents = stages[0]["in"]
    output_documents = stages[-1]["kept"]
    for s in stages:
        s["kept_of_input_pct"] = round(100.0 * s["kept"] / input_documents, 3) if input_documents else 0.0
    diagnostics = {k.split("|", 2)[2]: v for k, v in counters.items() if k.startswith("diagnostics|")}
    report = {
        "pipeline": pipeline,
        "input_documents": input_documents,
        "output_documents": output_documents,
        "rejected_documents": sum(sum(s["rejected"].values()) for s in stages),
        "stages": stages,
        "diagnostics": dict(sorted(diagnostics.items())),
    }
    per_source: Dict[str, Dict[str, int]] = {}
    for key, value in counters.items():  # source=<name>|<stage>|... (pipeline/beam.py, named inputs)
        if key.startswith(SOURCE_COUNTER_PREFIX):
            name, rest = key[len(SOURCE_COUNTER_PREFIX):].split("|", 1)
            per_source.setdefault(name, {})[rest] = value
    if per_source:
        report["sources"] = {}
        for name in sorted(per_source):
            sub = build_report(pipeline, stage_names, per_source[name], read_stage)
            sub.pop("diagnostics", None)
            report["sources"][name] = sub
    return report


SOURCE_COUNTER_PREFIX = "source="


def check_report(report: Mapping[str, Any]) -> None:
    """Raise AccountingError unless every invariant holds."""
    prev_kept: Optional[int] = None
    for s in report["stages"]:
        total = s["kept"] + sum(s["rejected"].values())
        if s["in"] != total:
            raise AccountingError(f"stage {s['name']}: in={s['in']} but kept+rejected={total}")
        if prev_kept is not None and s["in"] != prev_kept:
            raise AccountingError(f"stage {s['name']}: in={s['in']} but the previous stage kept {prev_kept}")
        prev_kept = s["kept"]
    rejected = sum(sum(s["rejected"].values()) for s in report["stages"])
    if report["input_documents"] != report["output_documents"] + rejected:
        raise AccountingError(
            f"input {report['input_documents']} != output {report['output_documents']} + rejected {rejected}"
        )
    sources = report.get("sources") or {}
    for name, sub in sources.items():
        try:
            check_report(sub)
        except AccountingError as e:
            raise AccountingError(f"source {name}: {e}") from e
    if sources:
        for i, s in enumerate(report["stages"]):
            parts = [sub["stages"][i] for sub in sources.values()]
            for what in ("in", "kept"):
                if sum(p[what] for p in parts) != s[what]:
                    raise AccountingError(f"stage {s['name']}: the sources' '{what}' add up to "
                                          f"{sum(p[what] for p in parts)}, the total is {s[what]}")
            for reason, n in s["rejected"].items():
                if sum(p["rejected"].get(reason, 0) for p in parts) != n:
                    raise AccountingError(f"stage {s['name']}: the sources' '{reason}' rejections do not add up to {n}")


def cross_check_manifest(report: Mapping[str, Any], manifest: Mapping[str, Any]) -> Dict[str, Any]:
    """Double entry: rows written to documents/ and rejected/ must equal the counted totals."""
    written_docs = sum(e["rows"] for e in manifest.get("documents", []))
    if written_docs != report["output_documents"]:
        raise AccountingError(f"documents/ holds {written_docs} rows but the counters say {report['output_documents']}")
    result = {"documents_rows": written_docs}
    if "rejected" in manifest:
        written_rej = sum(e["rows"] for e in manifest["rejected"])
        if written_rej != report["rejected_documents"]:
            raise AccountingError(f"rejected/ holds {written_rej} rows but the counters say {report['rejected_documents']}")
        result["rejected_rows"] = written_rej
    return result


def write_report(report: Mapping[str, Any], out_dir: str) -> str:
    from pipeline.io.shards import write_json_atomically

    from pipeline.io import fs

    path = fs.join(out_dir, "report.json")
    write_json_atomically(report, path)
    return path


_BLUE, _ORANGE = (0x2B, 0x6C, 0xB0), (0xDD, 0x6B, 0x20)
_INK, _GRID, _EDGE = (0x26, 0x26, 0x26), (0xE6, 0xE6, 0xE6), (0xCC, 0xCC, 0xCC)


def _font(px: int):
    """DejaVu Sans (the face matplotlib ships, found without importing matplotlib) at ``px`` pixels, or
    Pillow's built-in face."""
    import importlib.util
    import os

    from PIL import ImageFont

    spec = importlib.util.find_spec("matplotlib")
    if spec is not None and spec.origin:
        ttf = os.path.join(os.path.dirname(spec.origin), "mpl-data", "fonts", "ttf", "DejaVuSans.ttf")
        if os.path.exists(ttf):
            return ImageFont.truetype(ttf, px)
    return ImageFont.load_default(px)


def _text(draw, xy, text: str, font, anchor: str, fill=_INK) -> None:
    draw.text(xy, text, font=font, fill=fill, anchor=anchor)


def _rotated_text(img, xy, text: str, font, angle: float, anchor: str) -> None:
    """``text`` rotated counter-clockwise by ``angle`` degrees, its ``anchor`` corner ('right-top' or 'center')
    at ``xy``."""
    from PIL import Image, ImageDraw

    left, top, right, bottom = font.getbbox(text)
    tile = Image.new("L", (right - left + 4, bottom - top + 4), 0)
    ImageDraw.Draw(tile).text((2 - left, 2 - top), text, font=font, fill=255)
    rotated = tile.rotate(angle, resample=Image.BICUBIC, expand=True)
    w, h = rotated.size
    x, y = xy
    if anchor == "right-top":
        pos = (int(round(x - w)), int(round(y)))
    else:
        pos = (int(round(x - w / 2)), int(round(y - h / 2)))
    img.paste(Image.new("RGB", rotated.size, _INK), pos, rotated)


def draw_funnel(report: Mapping[str, Any], path: str, compare_paper: bool = True) -> str:
    """funnel.png: % of input documents kept after each stage, with RefinedWeb's funnel beside it.

    Drawn with Pillow (bars, grid, labels, legend) rather than matplotlib: the picture is the same kind,
    and a run no longer pays matplotlib's start-up (about a second of imports and signature inspection).
    Drawn at its final size (the text is anti-aliased by FreeType, the bars and lines are axis-aligned) and
    written by ``png_bytes`` rather than Pillow's PNG plugin (which loads Pillow's other image plugins
    too): ~0.1 s less of every run than drawing at twice the size and reducing it
    (``bench/bench_startup.py``)."""
    from PIL import Image, ImageDraw

    from pipeline.io.shards import write_bytes_atomically

    stages = report["stages"]
    names = [s["name"] for s in stages]
    ours = [s["kept_of_input_pct"] for s in stages]
    paper = [PAPER_FUNNEL.get(n) for n in names] if compare_paper else [None] * len(names)
    scale = 1  # all sizes below are in pixels times this factor
    width, height = int(110 * max(7, 1.05 * len(names) + 2)), 506
    img = Image.new("RGB", (width * scale, height * scale), "white")
    draw = ImageDraw.Draw(img)
    small, label, title = _font(11 * scale), _font(12 * scale), _font(15 * scale)
    longest = max((label.getlength(n) for n in names), default=0)
    left, right, top = 70 * scale, width * scale - 16 * scale, 36 * scale
    bottom = height * scale - int(longest * 0.5 + 24 * scale)  # room for labels rotated by 30 degrees
    ymax = 110.0

    def y_of(v: float) -> float:
        return bottom - (bottom - top) * min(max(v, 0.0), ymax) / ymax

    for tick in range(0, 101, 20):
        y = y_of(tick)
        draw.line([(left, y), (right, y)], fill=_GRID, width=scale)
        draw.line([(left - 5 * scale, y), (left, y)], fill=_INK, width=scale)
        _text(draw, (left - 8 * scale, y), str(tick), label, "rm")
    slot = (right - left) / max(len(names), 1)
    bar = slot * (0.4 if compare_paper else 0.7)
    paper_colour = tuple(int(round(0.8 * c + 0.2 * 255)) for c in _ORANGE)  # alpha 0.8 on white
    for i, name in enumerate(names):
        centre = left + slot * (i + 0.5)
        x0 = centre - (bar if compare_paper else bar / 2)
        draw.rectangle([x0, y_of(ours[i]), x0 + bar, bottom], fill=_BLUE)
        _text(draw, (x0 + bar / 2, y_of(ours[i]) - 3 * scale), f"{ours[i]:.1f}", small, "mb")
        if paper[i] is not None:
            draw.rectangle([centre, y_of(paper[i]), centre + bar, bottom], fill=paper_colour)
        draw.line([(centre, bottom), (centre, bottom + 5 * scale)], fill=_INK, width=scale)
        _rotated_text(img, (centre + 4 * scale, bottom + 8 * scale), name, label, 30, "right-top")
    draw.rectangle([left, top, right, bottom], outline=_INK, width=scale)
    _rotated_text(img, (22 * scale, (top + bottom) / 2), "% of input kept after stage", label, 90, "center")
    _text(draw, ((left + right) / 2, top - 10 * scale),
          f"Funnel: {report['pipeline']} -> {report['output_documents']:,} documents", title, "mb")
    entries = [(_BLUE, f"this run ({report['input_documents']:,} docs in)")]
    if any(v is not None for v in paper):
        entries.append((paper_colour, "RefinedWeb paper (% of CC)"))
    row = 18 * scale
    box_w = int(max(small.getlength(t) for _, t in entries) + 44 * scale)
    bx1, by0 = right - 8 * scale, top + 8 * scale
    bx0 = bx1 - box_w
    draw.rectangle([bx0, by0, bx1, by0 + row * len(entries) + 8 * scale], fill="white", outline=_EDGE, width=scale)
    for k, (colour, text) in enumerate(entries):
        y = by0 + 4 * scale + row * k + row / 2
        draw.rectangle([bx0 + 8 * scale, y - 5 * scale, bx0 + 28 * scale, y + 5 * scale], fill=colour)
        _text(draw, (bx0 + 36 * scale, y), text, small, "lm")
    write_bytes_atomically(path, png_bytes(img.size, img.tobytes()))  # local or gs://..., never half a picture
    return path


def png_bytes(size: Sequence[int], rgb: bytes, level: int = 6) -> bytes:
    """A PNG file (8-bit RGB, no interlacing) of ``size`` = (width, height) from its pixels, row by row
    (3 bytes per pixel): the signature, IHDR, one zlib-compressed IDAT (every row with filter type 0) and
    IEND, each chunk with its CRC-32."""
    import struct
    import zlib

    width, height = int(size[0]), int(size[1])
    stride = 3 * width
    if width < 1 or height < 1 or len(rgb) != stride * height:
        raise ValueError(f"{len(rgb)} bytes are not {width}x{height} RGB pixels")
    rows = b"".join(b"\x00" + rgb[i:i + stride] for i in range(0, stride * height, stride))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # depth 8, colour type 2 (RGB)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows, level))
            + chunk(b"IEND", b""))


def summary_text(report: Mapping[str, Any], out_dir: str, seconds: float) -> str:
    """The one-paragraph summary printed at the end of a run."""
    from pipeline.io import fs

    stages = report["stages"]
    biggest = sorted(
        ((reason, n) for s in stages for reason, n in s["rejected"].items()), key=lambda kv: -kv[1]
    )[:3]
    top = ", ".join(f"{r} {n:,}" for r, n in biggest) or "none"
    pct = 100.0 * report["output_documents"] / report["input_documents"] if report["input_documents"] else 0.0
    return (
        f"Pipeline '{report['pipeline']}' read {report['input_documents']:,} records and kept "
        f"{report['output_documents']:,} documents ({pct:.1f}%) in {seconds:.1f}s; "
        f"{report['rejected_documents']:,} were rejected with a reason (largest: {top}). "
        f"Every record is accounted for (in = kept + rejected at every stage). "
        f"Shards: {fs.join(out_dir, 'documents')}/, rejected: {fs.join(out_dir, 'rejected')}/, "
        f"report: {fs.join(out_dir, 'report.json')}, funnel: {fs.join(out_dir, 'funnel.png')}."
    )


def load_report(out_dir: str) -> Dict[str, Any]:
    """report.json of a run folder, local or on a Beam filesystem (gs://...)."""
    from pipeline.io import fs

    return json.loads(fs.read_bytes(fs.join(out_dir, "report.json")))
