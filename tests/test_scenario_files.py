"""Scenarios from YAML files and held-out variants: accepted wherever a scenario id is, validated with the
catalogue's schema and one-line errors, identified by id plus content hash."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vvho_env.env import VVHOEnv
from vvho_env.env_config import EnvConfig
from vvho_env.scenarios import Scenario, ScenarioError, catalogue, load_scenario

PHASE = {"name": "p", "intervals": 10, "rate_rps": 4000, "service_mean_us": 50}


def _scenario(**kw: object) -> dict:
    d: dict = {"id": "external-v0", "version": 0, "description": "from a file", "slo_us": 500,
               "phases": [dict(PHASE)]}
    d.update(kw)
    return d


def _write(path: Path, *scenarios: dict) -> Path:
    path.write_text(yaml.safe_dump({"scenarios": list(scenarios)}))
    return path


def test_a_file_is_accepted_wherever_an_id_is(tmp_path: Path) -> None:
    f = _write(tmp_path / "ext.yaml", _scenario())
    sc = load_scenario(str(f))
    assert sc.id == "external-v0" and sc.slo_us == 500
    env = VVHOEnv(str(f))
    env.reset(seed=1)
    env.close()
    cfg = EnvConfig(scenario=str(f))
    assert cfg.scenario == str(f.absolute())


def test_config_refs_become_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write(tmp_path / "ext.yaml", _scenario())
    monkeypatch.chdir(tmp_path)
    assert EnvConfig(scenario="ext.yaml").scenario == str(tmp_path / "ext.yaml")


def test_a_file_with_several_scenarios_is_named_by_path_and_id(tmp_path: Path) -> None:
    f = _write(tmp_path / "two.yaml", _scenario(), _scenario(id="other-v1", version=1, slo_us=900))
    assert load_scenario(f"{f}#other-v1").slo_us == 900
    with pytest.raises(ScenarioError, match=r"holds 2 scenarios; accepted: .*#ID"):
        load_scenario(str(f))
    with pytest.raises(ScenarioError, match="no scenario 'nope-v0'"):
        load_scenario(f"{f}#nope-v0")


def test_the_content_hash_tells_two_versions_of_one_id_apart(tmp_path: Path) -> None:
    f = _write(tmp_path / "ext.yaml", _scenario())
    a = load_scenario(str(f))
    _write(f, _scenario(slo_us=600))
    b = load_scenario(str(f))  # the edited file is read again, not served from a cache
    assert a.id == b.id and a.content_hash != b.content_hash and a.key != b.key
    _write(f, _scenario(description="only the words changed"))
    assert load_scenario(str(f)).content_hash == a.content_hash
    cat = catalogue()["diurnal-noisy-v1"]
    copy = _write(tmp_path / "copy.yaml", cat.model_dump(mode="json"))
    assert load_scenario(str(copy)).key == cat.key


@pytest.mark.parametrize(("entry", "field"), [
    (_scenario(phases=[{**PHASE, "rate_rps": -5}]), "field phases.0.rate_rps: -5 not accepted"),
    (_scenario(slo_us=0), "field slo_us: 0 not accepted"),
    (_scenario(colour="red"), "field colour: unknown field"),
    (_scenario(phases=[{**PHASE, "intervals": 3}]), "field phases.0.intervals: 3 not accepted"),
    (_scenario(id="external-v7"), "field id: 'external-v7' not accepted"),
])
def test_a_bad_field_is_one_line_naming_the_file_and_field(tmp_path: Path, entry: dict, field: str) -> None:
    f = _write(tmp_path / "bad.yaml", entry)
    with pytest.raises(ScenarioError) as exc:
        load_scenario(str(f))
    msg = str(exc.value)
    assert len(msg.splitlines()) == 1, msg
    assert msg.startswith(f"{f}: scenario ") and field in msg and "accepted" in msg, msg


def test_unreadable_or_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="no such scenario file"):
        load_scenario(str(tmp_path / "missing.yaml"))
    f = tmp_path / "bad.yaml"
    f.write_text("scenarios: [\n")
    with pytest.raises(ScenarioError, match="not valid YAML"):
        load_scenario(str(f))
    f.write_text("- 1\n- 2\n")
    with pytest.raises(ScenarioError, match="accepted: a YAML mapping with 'scenarios:'"):
        load_scenario(str(f))


FILE_PARSER = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
_values = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True),
                    st.text(max_size=8), st.lists(st.floats(-2, 2), max_size=3))


@FILE_PARSER
@given(field=st.sampled_from(["slo_us", "interval_s", "client_rtt_us", "host_profile", "version", "cpu_weight",
                              "phases", "base_settings"]), value=_values)
def test_any_bad_scenario_field_gives_one_line_or_a_valid_scenario(tmp_path: Path, field: str, value: object) -> None:
    f = _write(tmp_path / "fuzz.yaml", _scenario(**{field: value}))
    try:
        sc = load_scenario(str(f))
    except ScenarioError as exc:
        msg = str(exc)
        assert msg.startswith(str(f)) and len(msg.splitlines()) >= 1 and "Traceback" not in msg
        assert all(line.startswith(str(f)) and "accepted" in line for line in msg.splitlines()), msg
    else:
        assert isinstance(sc, Scenario)


@FILE_PARSER
@given(field=st.sampled_from(["intervals", "rate_rps", "rate_end_rps", "mmpp_mult", "service_mean_us",
                              "service_cv", "long_frac", "lock_prob", "neighbour_demand", "name"]), value=_values)
def test_any_bad_phase_field_names_the_phase_field(tmp_path: Path, field: str, value: object) -> None:
    f = _write(tmp_path / "fuzz.yaml", _scenario(phases=[{**PHASE, field: value}]))
    try:
        load_scenario(str(f))
    except ScenarioError as exc:
        for line in str(exc).splitlines():
            assert line.startswith(f"{f}: scenario external-v0: field phases.0") and "accepted" in line, line


@FILE_PARSER
@given(text=st.text(max_size=200))
def test_arbitrary_file_content_never_raises_anything_but_a_scenario_error(tmp_path: Path, text: str) -> None:
    f = tmp_path / "any.yaml"
    f.write_text(text)
    try:
        load_scenario(str(f))
    except ScenarioError as exc:
        assert str(exc).startswith(str(f))


# ---------------------------------------------------------------- held-out variants
def test_held_out_variants_are_deterministic_new_scenarios() -> None:
    base = load_scenario("diurnal-noisy-v1")
    a, b = load_scenario("diurnal-noisy-v1~1"), load_scenario("diurnal-noisy-v1~1")
    c = load_scenario("diurnal-noisy-v1~2")
    assert a == b and a.key == b.key
    assert len({base.content_hash, a.content_hash, c.content_hash}) == 3
    assert a.id == "diurnal-noisy-v1~1" and "held-out variant 1" in a.description
    assert [p.name for p in a.phases] != [p.name for p in base.phases]  # another phase order
    assert a.slo_us != base.slo_us and all(p.intervals >= 10 for p in a.phases)


@pytest.mark.parametrize("base", ["diurnal-noisy-v1", "bursty-mmpp-v0", "flash-crowd-v0", "neighbour-churn-v0",
                                  "mixed-v1", "steady-low-v0"])
def test_every_variant_of_the_catalogue_is_a_valid_scenario(base: str) -> None:
    for n in range(6):
        v = load_scenario(f"{base}~{n}")
        assert v.host_profile == load_scenario(base).host_profile
        VVHOEnv(v).close()


def test_bad_variant_refs_say_what_is_accepted() -> None:
    for ref in ("diurnal-noisy-v1~x", "~3", "no-such-v0~1"):
        with pytest.raises(ScenarioError, match="accepted"):
            load_scenario(ref)
