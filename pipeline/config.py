"""pipelines.yaml -> typed, validated pipeline specs.

The file holds named pipelines; each is an ordered list of stages with their parameters, plus output
settings. Every stage's parameters are checked against its ``Params`` dataclass: an unknown pipeline,
stage or key, a value of the wrong type, or a value out of range is a ``ConfigError`` whose message names
the file, the pipeline, the stage and the key (the CLI prints it without a traceback).

Strings may use ``${VAR}`` or ``${VAR:-default}``; ``${WEBREFINERY_DATA}`` defaults to ``../shared/data``
beside the repository (see ``pipeline/paths.py``), where this project's shared test data lives.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import typing
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

import yaml

from pipeline.stages.base import ParamError, Stage
from pipeline.errors import UserError

# The repository's pipelines.yaml; installed packages (wheel, container) carry the same file as package
# data (pipeline/pipelines.yaml is a symlink to it in the repository).
_REPO_CONFIG = Path(__file__).resolve().parents[1] / "pipelines.yaml"
DEFAULT_CONFIG = _REPO_CONFIG if _REPO_CONFIG.exists() else Path(__file__).resolve().parent / "pipelines.yaml"


class ConfigError(UserError, ValueError):
    """A problem in pipelines.yaml or a --set override, with a message meant for the user."""


@dataclasses.dataclass
class OutputSpec:
    """Where and how a run writes its shards."""

    num_shards: int = 8
    rejected_shards: int = 4
    write_rejected: bool = True
    compression: str = "zstd"

    def validate(self) -> None:
        if not 1 <= self.num_shards <= 100_000:
            raise ParamError(f"'num_shards' = {self.num_shards} is out of range [1, 100000]")
        if not 1 <= self.rejected_shards <= 100_000:
            raise ParamError(f"'rejected_shards' = {self.rejected_shards} is out of range [1, 100000]")
        if self.compression not in ("zstd", "lz4", "none"):
            raise ParamError(f"'compression' = {self.compression!r} must be one of zstd, lz4, none")


@dataclasses.dataclass
class StageSpec:
    name: str
    cls: type
    params: Any

    def build(self) -> Stage:
        return self.cls(self.params)


@dataclasses.dataclass
class PipelineSpec:
    name: str
    description: str
    stages: List[StageSpec]
    output: OutputSpec
    read: Any = None  # pipeline.io.readers.ReaderParams
    source: str = ""

    def build_stages(self) -> List[Stage]:
        return [s.build() for s in self.stages]


_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _expand(value: Any, defaults: Mapping[str, str]) -> Any:
    if isinstance(value, str):
        def sub(m: re.Match) -> str:
            var, default = m.group(1), m.group(2)
            if var in os.environ:
                return os.environ[var]
            if default is not None:
                return default
            if var in defaults:
                return defaults[var]
            raise ConfigError(f"environment variable ${{{var}}} is not set and has no default")

        return _VAR.sub(sub, value)
    if isinstance(value, list):
        return [_expand(v, defaults) for v in value]
    if isinstance(value, dict):
        return {k: _expand(v, defaults) for k, v in value.items()}
    return value


def _type_ok(value: Any, hint: Any) -> bool:
    """Loose runtime check of a YAML value against a dataclass field's type hint."""
    if hint is Any:
        return True
    origin = typing.get_origin(hint)
    if origin is typing.Union or (hasattr(__import__("types"), "UnionType") and isinstance(hint, __import__("types").UnionType)):
        return any(_type_ok(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if origin in (list, List, Sequence, tuple):
        args = typing.get_args(hint)
        return isinstance(value, (list, tuple)) and (not args or all(_type_ok(v, args[0]) for v in value))
    if origin in (dict, Dict, Mapping):
        return isinstance(value, dict)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(hint, type):
        return isinstance(value, hint)
    return True


def _coerce(value: Any, hint: Any) -> Any:
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if typing.get_origin(hint) in (tuple,) and isinstance(value, list):
        return tuple(value)
    return value


def build_params(params_cls: type, raw: Mapping[str, Any], where: str) -> Any:
    """Instantiate and validate a Params dataclass from a mapping; errors name ``where`` and the key."""
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: parameters must be a mapping of key: value, got {type(raw).__name__}")
    fields = {f.name: f for f in dataclasses.fields(params_cls)}
    hints = typing.get_type_hints(params_cls)
    kwargs = {}
    for key, value in raw.items():
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            known = ", ".join(fields) or "none"
            raise ConfigError(f"{where}: unknown key '{key}'{hint}; known keys: {known}")
        hint_t = hints.get(key, Any)
        if not _type_ok(value, hint_t):
            raise ConfigError(
                f"{where}: key '{key}' = {value!r} has the wrong type (expected {getattr(hint_t, '__name__', hint_t)})"
            )
        kwargs[key] = _coerce(value, hint_t)
    try:
        params = params_cls(**kwargs)
        validate = getattr(params, "validate", None)
        if validate:
            validate()
    except (ParamError, ValueError, TypeError) as exc:
        raise ConfigError(f"{where}: {exc}") from None
    return params


def _parse_stage_entry(entry: Any, where: str):
    if isinstance(entry, str):
        return entry, {}
    if isinstance(entry, Mapping) and len(entry) == 1:
        (name, params), = entry.items()
        return str(name), params or {}
    raise ConfigError(f"{where}: each stage must be a name or a one-key mapping 'name: {{params}}', got {entry!r}")


def _safe_load(text: str) -> Any:
    """``yaml.safe_load`` with libyaml's parser when PyYAML has it (~6x faster; the same safe constructor and
    resolver build the values); a document libyaml refuses is parsed again by the pure-Python parser, so
    errors read as before."""
    fast = getattr(yaml, "CSafeLoader", None)
    if fast is not None:
        try:
            return yaml.load(text, Loader=fast)  # noqa: S506 - CSafeLoader is the safe loader
        except yaml.YAMLError:
            pass
    return yaml.safe_load(text)


def load_config(path: Optional[os.PathLike | str] = None) -> Dict[str, Any]:
    """Read and parse the YAML file (safely); return its top-level mapping."""
    path = Path(path) if path else DEFAULT_CONFIG
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = _safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, Mapping) or not isinstance(data.get("pipelines"), Mapping):
        raise ConfigError(f"{path}: expected a top-level 'pipelines:' mapping of named pipelines")
    unknown = set(data) - {"pipelines", "version"}
    if unknown:
        raise ConfigError(f"{path}: unknown top-level key(s) {sorted(unknown)}; expected 'pipelines' (and 'version')")
    from pipeline.paths import shared_data_dir

    defaults = {"WEBREFINERY_DATA": str(shared_data_dir())}
    return {"path": str(path), "pipelines": _expand(dict(data["pipelines"]), defaults)}


def parse_override(text: str) -> tuple:
    """'stage.key=value' -> (stage, key, value) with the value parsed as YAML (numbers, lists, booleans)."""
    if "=" not in text or "." not in text.split("=", 1)[0]:
        raise ConfigError(f"--set {text!r}: expected STAGE.KEY=VALUE, e.g. --set langid.threshold=0.5")
    lhs, rhs = text.split("=", 1)
    stage, key = lhs.split(".", 1)
    try:
        value = yaml.safe_load(rhs) if rhs.strip() else ""
    except yaml.YAMLError:
        value = rhs
    return stage.strip(), key.strip(), value


def pipeline_names(path: Optional[os.PathLike | str] = None) -> List[str]:
    return list(load_config(path)["pipelines"])


def get_pipeline(
    name: str, path: Optional[os.PathLike | str] = None, overrides: Sequence[str] = ()
) -> PipelineSpec:
    """Load pipeline ``name`` from the config file, apply ``--set`` overrides, validate everything."""
    from pipeline.stages import load_named

    config = load_config(path)
    cfg_path = config["path"]
    pipelines = config["pipelines"]
    if name not in pipelines:
        close = difflib.get_close_matches(name, list(pipelines), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ConfigError(f"{cfg_path}: no pipeline named '{name}'{hint}; defined: {', '.join(pipelines)}")
    raw = pipelines[name]
    where_p = f"{cfg_path}: pipeline '{name}'"
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where_p}: must be a mapping with 'stages:'")
    unknown = set(raw) - {"description", "stages", "output", "read"}
    if unknown:
        raise ConfigError(f"{where_p}: unknown key(s) {sorted(unknown)}; expected description, stages, read, output")
    entries = raw.get("stages") or []
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{where_p}: 'stages' must be a non-empty list")
    parsed = [_parse_stage_entry(e, where_p) for e in entries]
    names = [n for n, _ in parsed]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise ConfigError(f"{where_p}: stage(s) {sorted(dupes)} listed twice")

    params_by_stage = {n: dict(p) if isinstance(p, Mapping) else p for n, p in parsed}
    for text in overrides:
        stage, key, value = parse_override(text)
        if stage in ("output", "read"):
            raw = dict(raw)
            raw[stage] = dict(raw.get(stage) or {}, **{key: value})
            continue
        if stage not in params_by_stage:
            raise ConfigError(f"--set {text!r}: pipeline '{name}' has no stage '{stage}'; stages: {', '.join(names)}")
        if not isinstance(params_by_stage[stage], dict):
            params_by_stage[stage] = {}
        params_by_stage[stage][key] = value

    registry = load_named(names)  # only the stage modules this pipeline uses (all of them for an unknown name)
    specs = []
    for stage_name in names:
        where = f"{where_p}, stage '{stage_name}'"
        if stage_name not in registry:
            close = difflib.get_close_matches(stage_name, list(registry), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(f"{where}: unknown stage{hint}; available: {', '.join(sorted(registry))}")
        cls = registry[stage_name]
        specs.append(StageSpec(stage_name, cls, build_params(cls.Params, params_by_stage[stage_name], where)))
    from pipeline.io.readers import ReaderParams

    output = build_params(OutputSpec, raw.get("output") or {}, f"{where_p}, output")
    read = build_params(ReaderParams, raw.get("read") or {}, f"{where_p}, read")
    return PipelineSpec(name, str(raw.get("description", "")).strip(), specs, output, read, cfg_path)
