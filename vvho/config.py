"""Experiment files: loading, ``--set`` overrides, the shipped configs and the JSON schema.

An experiment file has the sections of ``agents.config.TrainingConfig`` (env, agent, train) and a
tracking section. The models live with what they configure; this module reads YAML, applies
``--set section.field=value`` overrides (values parsed as YAML, so ``1e-4``, ``[64, 64]`` and ``true``
work), and turns every validation failure into one line per field naming the file (or the ``--set``
that gave the value), the dotted field path and what is accepted. It imports no torch or MLflow, so a
typo is reported in about a second.

The configs shipped with the package (``vvho/configs``) can be named without a path:
``--config ppo_diurnal``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from pydantic import Field, ValidationError, field_validator

from agents.config import AGENT_MODELS, ALGORITHMS, DEFAULT_ALGORITHM, TrainingConfig, carried_over
from vvho_env.config_base import StrictModel, field_errors
from vvho_env.errors import VVHOError, did_you_mean

CONFIG_DIR = Path(str(resources.files("vvho") / "configs"))
SCHEMA_PATH = CONFIG_DIR / "schema.json"
SECTIONS = ("env", "agent", "train", "tracking", "suite")
# MLflow's tracking stores by URI scheme (a SQLAlchemy driver may follow a '+', e.g. postgresql+psycopg2)
TRACKING_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql", "http", "https", "databricks", "file")


class ConfigError(VVHOError, ValueError):
    """A config that cannot be used; the message names the file (or --set) and the field."""


def check_tracking_uri(uri: str) -> str:
    """The URI if MLflow can open a store from it; else ValueError saying which forms are accepted."""
    scheme = urlsplit(uri).scheme.split("+")[0].lower()
    if scheme not in TRACKING_SCHEMES:
        raise ValueError(f"scheme {scheme or '(none)'!r}{did_you_mean(scheme, TRACKING_SCHEMES)} is not an MLflow "
                         "tracking store")
    if scheme == "sqlite" and not uri.startswith("sqlite:///"):
        raise ValueError("a SQLite store is written sqlite:///relative/path.db or sqlite:////absolute/path.db")
    return uri


_URI_ACCEPTED = (f"an MLflow tracking URI with scheme {', '.join(TRACKING_SCHEMES)} (e.g. sqlite:///runs/mlflow.db, "
                 "http://host:5000), or null for the results directory's own store")


class TrackingConfig(StrictModel):
    uri: str | None = Field(None, description="MLflow tracking URI; default: the results directory's mlflow.db",
                            json_schema_extra={"accepted": _URI_ACCEPTED})
    experiment: str = Field("vvho-agents", min_length=1, max_length=256, description="MLflow experiment name")

    @field_validator("uri")
    @classmethod
    def _uri(cls, value: str | None) -> str | None:
        return None if value is None else check_tracking_uri(value)


class ExperimentConfig(TrainingConfig):
    """One training run: environment, agent, training loop and tracking."""

    suite: str | None = Field(None, description="train on a suite (see vvho/configs/suites): its training "
                              "scenarios become env.mixture and its randomisation env.randomisation, with randomise "
                              "on, unless the env section sets them", json_schema_extra={
                                  "accepted": "a shipped suite name or a suite YAML file, or null"})
    tracking: TrackingConfig = TrackingConfig()


def shipped_configs() -> dict[str, Path]:
    """The configs shipped with the package, by name (file stem)."""
    return {p.stem: p for p in sorted(CONFIG_DIR.glob("*.yaml"))}


def resolve_config(text: str | Path) -> Path:
    """A config file by path, or a shipped config by name (with or without .yaml)."""
    path = Path(text)
    if path.is_file():
        return path
    shipped = shipped_configs()
    name = path.name.removesuffix(".yaml").removesuffix(".yml")
    if name in shipped and path.parent in (Path("."), Path("configs")):  # a name, or the repository's old path
        return shipped[name]
    if path.is_dir():
        raise ConfigError(f"{path}: is a directory; accepted: a YAML experiment file or a shipped config name")
    raise ConfigError(f"{path}: no such file{did_you_mean(name, shipped)}; accepted: a YAML experiment file or a "
                      f"shipped config: {', '.join(shipped)} (see `vvho configs`)")


def _agent_algorithm(raw: dict[str, Any]) -> Any:
    agent = raw.get("agent")
    return agent.get("algorithm", DEFAULT_ALGORITHM) if isinstance(agent, dict) else DEFAULT_ALGORITHM


def apply_overrides(raw: dict[str, Any], overrides: Sequence[str], notes: list[str] | None = None) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides to a raw config dict (values parsed as YAML).

    Switching ``agent.algorithm`` drops the file's agent fields that the new algorithm does not
    have (each named in `notes`); fields given with --set are never dropped, so a --set that does
    not apply is reported as an error."""
    out = json.loads(json.dumps(raw))
    before = _agent_algorithm(out)
    set_agent_fields = set()
    for item in overrides:
        key, sep, text = item.partition("=")
        parts = key.strip().split(".")
        if not sep or not all(p.strip() for p in parts):
            raise ConfigError(f"--set {item!r}: not accepted; accepted: section.field=value, sections: "
                              f"{', '.join(SECTIONS)}")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {item!r}: the value is not valid YAML ({_yaml_problem(exc)}); accepted: "
                              "a YAML scalar or list, e.g. 1e-4, [64, 64], true") from None
        node = out
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"--set {item!r}: {'.'.join(parts[: depth + 1])} is a value, not a section")
            node = child
        node[parts[-1]] = value
        if parts[0] == "agent" and len(parts) == 2:
            set_agent_fields.add(parts[1])
    after = _agent_algorithm(out)
    agent = out.get("agent")
    if after != before and after in ALGORITHMS and isinstance(agent, dict):
        keep = carried_over(before, after)
        dropped = sorted(k for k in agent if k not in keep and k not in set_agent_fields)
        for k in dropped:
            del agent[k]
        if dropped and notes is not None:
            notes.append(f"--set agent.algorithm={after}: dropped the file's {before} settings that do not apply to "
                         f"{after}: "
                         + ", ".join(f"agent.{k}" for k in dropped))
    return out


def _yaml_problem(exc: yaml.YAMLError) -> str:
    problem = getattr(exc, "problem", None)
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"{problem or 'cannot parse'}{where}"


def source_of(path: str, source: str, overrides: Sequence[str]) -> str:
    """The --set that gave the value at `path` (the last one wins), else the file."""
    for item in reversed(overrides):
        key = item.partition("=")[0].strip()
        if path == key or path.startswith(key + ".") or key.startswith(path + "."):
            return f"--set {item}"
    return source


def parse_config(raw: object, source: str, overrides: Sequence[str] = (),
                 notes: list[str] | None = None) -> ExperimentConfig:
    if raw is None or raw == {} or (isinstance(raw, dict) and all(v in (None, {}) for v in raw.values())
                                    and set(raw) <= set(SECTIONS)):
        raise ConfigError(f"{source}: the file sets nothing; accepted: a mapping with at least one of the "
                          f"sections {', '.join(SECTIONS)} (start from a shipped config: `vvho configs`)")
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: a {type(raw).__name__} at the top level is not accepted; accepted: a mapping "
                          f"of sections {', '.join(SECTIONS)}")
    raw = apply_overrides(raw, overrides, notes)
    from vvho.suites import SuiteError, expand_into

    try:
        raw = expand_into(raw, source_of("suite", source, overrides))
    except SuiteError as exc:
        raise ConfigError(str(exc)) from None
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as exc:
        lines = []
        for err, line in zip(exc.errors(), field_errors("", exc, ExperimentConfig), strict=True):
            line = _tag_error(err) or _other_algorithms_field(err, raw) or line
            path = line.split("field ", 1)[1].split(":", 1)[0] if "field " in line else ""
            lines.append(f"{source_of(path, source, overrides)}{line}")
        raise ConfigError("\n".join(lines)) from None


def _tag_error(err: Any) -> str | None:
    """The one-line form of an unknown algorithm (pydantic reports it on the whole agent section)."""
    if err["type"] != "union_tag_invalid":
        return None
    tag = err.get("ctx", {}).get("tag")
    return (f": field agent.algorithm: {tag!r} not accepted{did_you_mean(str(tag), ALGORITHMS)}; accepted: one of "
            f"{', '.join(ALGORITHMS)}")


def _other_algorithms_field(err: Any, raw: dict[str, Any]) -> str | None:
    """An agent field that only other algorithms have: say which, rather than 'unknown field'."""
    loc = [str(p) for p in err["loc"] if str(p) not in ALGORITHMS]
    if err["type"] != "extra_forbidden" or len(loc) != 2 or loc[0] != "agent":
        return None
    algorithm = _agent_algorithm(raw)
    owners = [a for a in ALGORITHMS if loc[1] in AGENT_MODELS[a].model_fields]
    if not owners:
        return None
    return (f": field agent.{loc[1]}: does not apply to {algorithm}; accepted here: the fields of {algorithm} "
            f"({', '.join(AGENT_MODELS[str(algorithm)].model_fields)}); agent.{loc[1]} is a field of "
            f"{', '.join(owners)}")


def load_config(path: str | Path, overrides: Sequence[str] = (), notes: list[str] | None = None) -> ExperimentConfig:
    """Read and validate a YAML experiment file (a path or a shipped name), then apply ``--set`` overrides."""
    p = resolve_config(path)
    try:
        text = p.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(f"{p}: cannot read the config ({reason}); accepted: a readable UTF-8 YAML file") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML ({_yaml_problem(exc)}); accepted: a YAML mapping of sections "
                          f"{', '.join(SECTIONS)}") from None
    return parse_config(raw, str(p), overrides, notes)


def dump_config(cfg: ExperimentConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


def schema() -> dict[str, Any]:
    return ExperimentConfig.model_json_schema()


def write_schema(path: Path = SCHEMA_PATH) -> Path:
    path.write_text(json.dumps(schema(), indent=2) + "\n")
    return path
