"""Scenarios from YAML files in the catalogue's format, accepted wherever a scenario id is.

A file holds ``scenarios:`` and a list of scenarios exactly as ``vvho_env/scenarios.yaml`` does, validated
by the same models with the same one-line errors (naming the file, the scenario and the field). A file
with one scenario is named by its path; a file with several by ``path#id``. A file's scenario is
identified by its id plus its content hash (``Scenario.key``), so that an edited file never shares a
cache entry or a tracked run with the version before it, even under the same id.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import yaml

from vvho_env.scenarios import Scenario, ScenarioError, parse_scenarios

SUFFIXES = (".yaml", ".yml")


def _split(ref: str) -> tuple[str, str | None]:
    path, sep, sid = ref.partition("#")
    return path, (sid if sep else None)


def _path(text: str) -> Path:
    return Path(os.path.expanduser(text))  # unlike Path.expanduser, never raises for '~N' without a home


def looks_like_file(ref: str) -> bool:
    """A reference meant as a file: it ends in .yaml/.yml (before an optional #id), or names an existing file."""
    path, _ = _split(ref)
    return path.lower().endswith(SUFFIXES) or _path(path).is_file()


def absolute_ref(ref: str) -> str:
    """The same reference with an absolute path, so that another process or directory loads the same file."""
    path, sid = _split(ref)
    full = str(_path(path).absolute())
    return full if sid is None else f"{full}#{sid}"


@lru_cache(maxsize=64)
def _parse(path: str, mtime_ns: int, size: int) -> dict[str, Scenario]:
    # keyed on mtime and size too: an edited file is read again, never served from this cache
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ScenarioError(f"{path}: cannot read the scenario file ({reason}); accepted: a readable UTF-8 YAML "
                            "file") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ScenarioError(f"{path}: not valid YAML ({getattr(exc, 'problem', None) or 'cannot parse'}{where}); "
                            "accepted: a YAML mapping with 'scenarios:' in the catalogue's format") from None
    return parse_scenarios(raw, path)


def file_scenarios(path: str | Path) -> dict[str, Scenario]:
    """Every scenario of a file, by id."""
    p = _path(str(path))
    try:
        st = p.stat()
    except OSError:
        raise ScenarioError(f"{p}: no such scenario file; accepted: a YAML file in the catalogue's format "
                            "(path or path#id), a catalogue id or a held-out variant") from None
    if not p.is_file():
        raise ScenarioError(f"{p}: not a file; accepted: a YAML file in the catalogue's format")
    return _parse(str(p.absolute()), st.st_mtime_ns, st.st_size)


def load_file(ref: str) -> Scenario:
    """The scenario a file reference names: the file's only scenario, or ``path#id``."""
    path, sid = _split(ref)
    found = file_scenarios(path)
    if sid is None:
        if len(found) == 1:
            return next(iter(found.values()))
        raise ScenarioError(f"{path}: holds {len(found)} scenarios; accepted: {path}#ID with ID one of "
                            f"{', '.join(found)}")
    if sid not in found:
        raise ScenarioError(f"{path}: no scenario {sid!r}; accepted: {', '.join(f'{path}#{k}' for k in found)}")
    return found[sid]
