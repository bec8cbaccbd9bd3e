"""The scenario catalogue: versioned, validated, deterministic randomisation, the default operating point."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from pydantic import ValidationError

from vvho_env import scenarios as S
from vvho_env.scenarios import Scenario, ScenarioError, load_scenario
from vvho_env.sim.backend import SimBackend
from vvho_env.types import Telemetry

GOOD_PHASE = {"name": "p", "intervals": 10, "rate_rps": 1000, "service_mean_us": 50}


def good(**kw: object) -> dict:
    d: dict = {"id": "tiny-v0", "version": 0, "description": "test", "slo_us": 500, "phases": [dict(GOOD_PHASE)]}
    d.update(kw)
    return d


def test_catalogue_has_at_least_8_versioned_scenarios() -> None:
    cat = S.catalogue()
    assert len(cat) >= 8
    assert S.DEFAULT_SCENARIO in cat
    for sid, sc in cat.items():
        assert sid == sc.id
        assert sid.endswith(f"-v{sc.version}")
        assert sc.description.strip()


@pytest.mark.parametrize("sid", S.scenario_ids())
def test_every_phase_has_at_least_10_intervals(sid: str) -> None:
    sc = load_scenario(sid)
    assert sc.phases
    assert all(ph.intervals >= 10 for ph in sc.phases)
    assert sc.episode_intervals == sum(ph.intervals for ph in sc.phases)
    # phase_at walks through the phases in order and cycles after the episode
    names = [sc.phase_at(i)[1].name for i in range(sc.episode_intervals)]
    assert names == [ph.name for ph in sc.phases for _ in range(ph.intervals)]
    assert sc.phase_at(sc.episode_intervals)[0] == 0


@pytest.mark.parametrize("sid", S.scenario_ids())
def test_start_settings_validate(sid: str) -> None:
    from vvho_env import knobs

    sc = load_scenario(sid)
    start = sc.settings_at_start()
    assert knobs.validate_settings(start) == start
    for k, v in sc.base_settings.items():
        assert start[k] == v


def test_unknown_id_lists_valid_ids() -> None:
    with pytest.raises(ScenarioError) as exc:
        load_scenario("diurnal-noisy-v9")
    msg = str(exc.value)
    assert "diurnal-noisy-v9" in msg
    for sid in S.scenario_ids():
        assert sid in msg


def test_load_scenario_passes_objects_through() -> None:
    sc = load_scenario(S.DEFAULT_SCENARIO)
    assert load_scenario(sc) is sc


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (good(colour="red"), "colour"),
        (good(phases=[{**GOOD_PHASE, "burstiness": 3}]), "burstiness"),
        (good(phases=[{**GOOD_PHASE, "neighbour_demand": [0.5, 1.7]}]), "neighbour_demand"),
        (good(phases=[{**GOOD_PHASE, "intervals": 5}]), "intervals"),
        (good(phases=[{**GOOD_PHASE, "rate_rps": -1}]), "rate_rps"),
        (good(slo_us=0), "slo_us"),
        (good(host_profile="cray-1"), "host_profile"),
        (good(phases=[]), "phase"),
    ],
)
def test_malformed_scenario_is_rejected_naming_the_field(data: dict, field: str) -> None:
    with pytest.raises(ValidationError) as exc:
        Scenario.model_validate(data)
    assert field in str(exc.value)


def test_bad_base_setting_names_the_knob() -> None:
    with pytest.raises(ValidationError, match="vcpu_quota"):
        Scenario.model_validate(good(base_settings={"vcpu_quota": 5}))


def test_catalogue_file_errors_name_the_scenario_and_field(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bad = tmp_path / "scenarios.yaml"
    bad.write_text(yaml.safe_dump({"scenarios": [good(), good(id="broken-v0", extra_field=1)]}))
    monkeypatch.setattr(S, "CATALOGUE", bad)
    S.catalogue.cache_clear()
    try:
        with pytest.raises(ScenarioError) as exc:
            S.catalogue()
        assert "broken-v0" in str(exc.value) and "extra_field" in str(exc.value)
        bad.write_text(yaml.safe_dump({"scenarios": [good(id="tiny-v3")]}))
        S.catalogue.cache_clear()
        with pytest.raises(ScenarioError, match="ends with -v0"):
            S.catalogue()
        bad.write_text(yaml.safe_dump({"scenarios": [good(), good()]}))
        S.catalogue.cache_clear()
        with pytest.raises(ScenarioError, match="duplicate"):
            S.catalogue()
    finally:
        monkeypatch.undo()
        S.catalogue.cache_clear()
    assert S.DEFAULT_SCENARIO in S.catalogue()


def test_randomised_is_deterministic_per_seed_and_differs_across_seeds() -> None:
    sc = load_scenario(S.DEFAULT_SCENARIO)
    a, b, c = sc.randomised(11), sc.randomised(11), sc.randomised(12)
    assert a == b
    assert a != c
    assert a.id == sc.id and a.episode_intervals == sc.episode_intervals
    spread = sc.randomise
    for ph0, ph in zip(sc.phases, a.phases, strict=True):
        assert ph0.rate_rps * (1 - spread.rate) <= ph.rate_rps <= ph0.rate_rps * (1 + spread.rate)
        assert ph0.service_mean_us * (1 - spread.service) <= ph.service_mean_us
        assert ph.service_mean_us <= ph0.service_mean_us * (1 + spread.service)
        assert all(0.0 <= d <= 1.0 for d in ph.neighbour_demand)
    assert sc.randomised(11) != sc  # the catalogue entry itself is untouched
    assert load_scenario(S.DEFAULT_SCENARIO) == sc


def test_mean_requests_per_window_accounts_for_ramps_and_bursts() -> None:
    flat = Scenario.model_validate(good())
    assert S.mean_requests_per_window(flat) == pytest.approx(1000 * 0.25)
    ramp = Scenario.model_validate(good(phases=[{**GOOD_PHASE, "rate_end_rps": 3000}]))
    assert S.mean_requests_per_window(ramp) == pytest.approx(2000 * 0.25)
    burst = Scenario.model_validate(
        good(phases=[{**GOOD_PHASE, "mmpp_mult": 3.0, "mmpp_on_ms": 20, "mmpp_off_ms": 180}])
    )
    assert S.mean_requests_per_window(burst) == pytest.approx(1000 * (1 + 2 * 0.1) * 0.25)


# ---------------------------------------------------------------- the default scenario's operating point
@pytest.fixture(scope="module")
def default_episode() -> list[Telemetry]:
    sc = load_scenario(S.DEFAULT_SCENARIO)
    be = SimBackend()
    be.reset(20240601, sc)
    try:
        return [be.measure(sc.interval_s) for _ in range(sc.episode_intervals)]
    finally:
        be.close()


def test_default_scenario_requests_per_window(default_episode: list[Telemetry]) -> None:
    offered = np.mean([t.offered_rps * t.window_s for t in default_episode])
    assert 2000 <= offered <= 5000, offered
    assert 2000 <= S.mean_requests_per_window(load_scenario(S.DEFAULT_SCENARIO)) <= 5000


def test_default_scenario_median_service_at_most_50us() -> None:
    sc = load_scenario(S.DEFAULT_SCENARIO)
    for ph in sc.phases:
        assert S.lognormal_median_us(ph.service_mean_us, ph.service_cv) <= 50.0


def test_default_scenario_vcpu_utilisation_at_least_40_percent(default_episode: list[Telemetry]) -> None:
    sc = load_scenario(S.DEFAULT_SCENARIO)
    nv = sc.settings_at_start()["vcpu_count"]
    assert isinstance(nv, int)
    util = np.mean([(t.vm_cpu - t.polling_cpu - t.reserved_cores) / nv for t in default_episode])
    assert sc.vcpu_util_target is not None
    assert util >= sc.vcpu_util_target, f"measured mean vCPU utilisation {util:.3f}"
