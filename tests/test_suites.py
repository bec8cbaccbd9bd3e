"""Suites: the shipped ones validate and hold their held-out scenarios out; bad ones give one line per field
naming the file; the JSON schema is current; experiment configs train on a suite."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vvho.config import load_config
from vvho.suites import SCHEMA_PATH, Suite, SuiteError, load_suite, schema, shipped_suites
from vvho_env.scenarios import load_scenario

MINIMAL = {"name": "mine", "train": ["steady-low-v0"]}


def _write(tmp_path: Path, raw: object) -> Path:
    f = tmp_path / "suite.yaml"
    f.write_text(yaml.safe_dump(raw))
    return f


@pytest.mark.parametrize("name", sorted(shipped_suites()))
def test_shipped_suites_validate(name: str) -> None:
    suite = load_suite(name)
    trained = {sc.content_hash for sc in suite.training_scenarios()}
    held = suite.held_out_scenarios()
    assert held and not any(sc.content_hash in trained for sc in held)
    assert len(suite.evaluation_refs()) >= 2


def test_core_is_the_catalogue_plus_held_out_variants() -> None:
    from vvho_env.scenarios import catalogue

    core = load_suite("core")
    xeon = [sid for sid, sc in catalogue().items() if sc.host_profile == "xeon-kvm"]
    assert sorted(core.train) == sorted(xeon)
    assert {load_scenario(r).id.split("~")[0] for r in core.held_out.refs()} >= {
        "diurnal-noisy-v1", "bursty-mmpp-v0", "flash-crowd-v0", "neighbour-churn-v0", "mixed-v1"}


def test_the_json_schema_is_current() -> None:
    assert json.loads(SCHEMA_PATH.read_text()) == schema(), "run vvho.suites.write_schema()"


@pytest.mark.parametrize(("raw", "expect"), [
    ({**MINIMAL, "train": ["no-such-v0"]}, "field train: ['no-such-v0'] not accepted (unknown scenario"),
    ({**MINIMAL, "colour": 1}, "field colour: unknown field"),
    ({**MINIMAL, "held_out": {"variants": [{"base": "steady-low-v0", "numbers": [-1]}]}}, "field held_out.variants.0"),
    ({**MINIMAL, "compare": {"methods": ["gd-offlin"]}}, "did you mean 'gd-offline'"),
    ({**MINIMAL, "compare": {"budget": 0}}, "field compare.budget: 0 not accepted"),
    ({**MINIMAL, "train": ["steady-low-v0", "testbed-echo-v0"]}, "different knobs"),
    ({**MINIMAL, "held_out": {"external": ["steady-low-v0"]}}, "has the content of training scenario"),
    ({**MINIMAL, "compare": {"rl": [{"name": "x"}]}}, "either config"),
])
def test_a_bad_suite_is_one_line_per_problem_naming_the_file(tmp_path: Path, raw: dict, expect: str) -> None:
    f = _write(tmp_path, raw)
    with pytest.raises(SuiteError) as exc:
        load_suite(str(f))
    for line in str(exc.value).splitlines():
        assert line.startswith(str(f)), line
    assert expect in str(exc.value)


SUITE_FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
_values = st.one_of(st.none(), st.booleans(), st.integers(-5, 10**6), st.floats(allow_nan=True), st.text(max_size=10),
                    st.lists(st.text(max_size=10), max_size=3), st.dictionaries(st.text(max_size=5), st.integers(),
                                                                                max_size=2))


@SUITE_FUZZ
@given(path=st.sampled_from([("name",), ("train",), ("randomisation", "rate"), ("held_out", "variants"),
                             ("held_out", "external"), ("compare", "methods"), ("compare", "seeds"),
                             ("compare", "budget"), ("compare", "rl"), ("compare", "workers"),
                             ("compare", "reference_search")]), value=_values)
def test_any_value_of_any_field_validates_or_fails_in_lines_naming_the_file(tmp_path: Path, path: tuple[str, ...],
                                                                            value: object) -> None:
    raw: dict = json.loads(json.dumps(MINIMAL))
    node = raw
    for part in path[:-1]:
        node = node.setdefault(part, {})
    node[path[-1]] = value
    f = _write(tmp_path, raw)
    try:
        suite = load_suite(str(f))
    except SuiteError as exc:
        assert all(line.startswith(str(f)) for line in str(exc).splitlines()), str(exc)
    else:
        assert isinstance(suite, Suite)


@SUITE_FUZZ
@given(text=st.text(max_size=120))
def test_arbitrary_suite_files_give_a_suite_error(tmp_path: Path, text: str) -> None:
    f = tmp_path / "any.yaml"
    f.write_text(text)
    try:
        load_suite(str(f))
    except SuiteError as exc:
        assert str(exc).startswith(str(f))


def test_a_config_with_a_suite_trains_on_its_mixture() -> None:
    cfg = load_config("ppo_core")
    core = load_suite("core")
    assert cfg.suite == "core" and cfg.env.mixture == core.train and cfg.env.randomise
    assert cfg.env.randomisation == core.randomisation
    small = load_config("ppo_core", ["suite=quick"])
    assert small.env.mixture == load_suite("quick").train
    own = load_config("ppo_core", ["env.mixture=[mixed-v1, flash-crowd-v0]"])
    assert own.env.mixture == ["mixed-v1", "flash-crowd-v0"] and own.env.scenario == "mixed-v1"
