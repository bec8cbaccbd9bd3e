"""The knob registry: complete entries, valid defaults, one [-1, 1] scale per knob, actionable errors."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vvho_env import knobs
from vvho_env.knobs import KNOBS, REGISTRY, SPECIAL_BAND, ChangeCost, Group, KnobError

NUMERIC = [k for k in KNOBS if k.kind in ("int", "float")]
CHOICE = [k for k in KNOBS if k.kind in ("categorical", "bool")]
unit_x = st.floats(min_value=-1.0, max_value=1.0, allow_nan=False)


def test_registry_covers_r_c_s_with_at_least_14_knobs() -> None:
    assert len(KNOBS) >= 14
    assert len(REGISTRY) == len(KNOBS), "knob names must be unique"
    groups = {k.group for k in KNOBS}
    assert groups == {Group.R, Group.C, Group.S}
    for g in Group:
        assert sum(k.group is g for k in KNOBS) >= 2, g


@pytest.mark.parametrize("knob", KNOBS, ids=lambda k: k.name)
def test_every_knob_carries_its_required_fields(knob: knobs.Knob) -> None:
    assert knob.name and knob.description and knob.source
    assert knob.kind in ("int", "float", "categorical", "bool")
    assert knob.scope in ("vm", "vcpu", "host", "guest")
    assert isinstance(knob.change_cost, ChangeCost)
    assert knob.change_weight >= 0.0
    assert knobs.SIM in knob.setters, "every knob is settable in the simulator"
    assert all(how for how in knob.setters.values())
    if knob.kind in ("categorical", "bool"):
        assert len(knob.choices) >= 2 and len(set(knob.choices)) == len(knob.choices)
    else:
        assert knob.scale in ("linear", "log")
        assert knob.low < knob.high
        if knob.scale == "log":
            assert knob.low > 0
        for special in (knob.off, knob.unlimited):
            assert special is None or not knob.low <= float(special) <= knob.high, "special point inside range"


def test_defaults_validate_and_are_the_stock_values() -> None:
    d = knobs.defaults()
    assert set(d) == set(REGISTRY)
    assert knobs.validate_settings(d) == d
    assert d["halt_poll_ns"] == 200_000  # KVM x86 default
    assert d["vcpu_quota"] == -1  # unlimited
    assert d["vcpu_period"] == 100_000
    assert d["vcpu_pinning"] == "shared"


def test_restart_cost_knobs_are_the_ones_needing_a_guest_restart() -> None:
    restart = {k.name for k in KNOBS if k.change_cost is ChangeCost.RESTART}
    assert {"vcpu_count", "virtio_backend"} <= restart
    assert "halt_poll_ns" not in restart and "vcpu_quota" not in restart


@pytest.mark.parametrize("knob", KNOBS, ids=lambda k: k.name)
@settings(max_examples=60, deadline=None)
@given(x=unit_x)
def test_from_unit_is_valid_and_stable_under_round_trip(knob: knobs.Knob, x: float) -> None:
    v = knob.from_unit(x)
    assert knob.validate(v) == v
    u = knob.to_unit(v)
    assert -1.0 <= u <= 1.0
    assert knob.from_unit(u) == v


@pytest.mark.parametrize("knob", KNOBS, ids=lambda k: k.name)
def test_default_round_trips_through_the_scale(knob: knobs.Knob) -> None:
    assert knob.from_unit(knob.to_unit(knob.default)) == knob.default


@pytest.mark.parametrize("knob", NUMERIC, ids=lambda k: k.name)
@settings(max_examples=60, deadline=None)
@given(a=unit_x, b=unit_x)
def test_numeric_scales_are_monotone(knob: knobs.Knob, a: float, b: float) -> None:
    lo, hi = sorted((a, b))

    def rank(v: knobs.KnobValue) -> float:  # 'off' below the range, 'unlimited' above it
        if knob.off is not None and v == knob.off:
            return -math.inf
        if knob.unlimited is not None and v == knob.unlimited:
            return math.inf
        return float(v)

    assert rank(knob.from_unit(lo)) <= rank(knob.from_unit(hi))


@pytest.mark.parametrize("knob", NUMERIC, ids=lambda k: k.name)
def test_numeric_range_ends_are_reached(knob: knobs.Knob) -> None:
    lo_x = -1.0 + (SPECIAL_BAND if knob.off is not None else 0.0)
    hi_x = 1.0 - (SPECIAL_BAND if knob.unlimited is not None else 0.0)
    assert knob.from_unit(lo_x) == pytest.approx(knob.low)
    assert knob.from_unit(hi_x) == pytest.approx(knob.high)
    assert knob.to_unit(knob.low) == pytest.approx(lo_x)
    assert knob.to_unit(knob.high) == pytest.approx(hi_x)


def test_log_scale_puts_geometric_middle_at_band_centre() -> None:
    k = REGISTRY["cpu_shares"]  # log, no special points
    mid = k.from_unit(0.0)
    assert mid == round(math.sqrt(k.low * k.high))


def test_explicit_off_and_unlimited_points() -> None:
    hp = REGISTRY["halt_poll_ns"]
    assert hp.from_unit(-1.0) == 0 and hp.to_unit(0) == -1.0
    assert hp.from_unit(-1.0 + SPECIAL_BAND / 2) == 0
    assert hp.from_unit(-1.0 + SPECIAL_BAND + 1e-9) >= hp.low
    assert hp.from_unit(1.0) == hp.high  # no unlimited point: +1 is the top of the range

    q = REGISTRY["vcpu_quota"]
    assert q.from_unit(1.0) == -1 and q.to_unit(-1) == 1.0
    assert q.from_unit(1.0 - SPECIAL_BAND / 2) == -1
    assert q.from_unit(1.0 - SPECIAL_BAND - 1e-9) <= q.high
    assert q.from_unit(-1.0) == q.low  # no off point: -1 is the smallest quota

    for name in ("rx_usecs", "busy_poll_us", "ple_window"):
        assert REGISTRY[name].from_unit(-1.0) == 0, name
    for name in ("emulator_quota", "global_quota"):
        assert REGISTRY[name].from_unit(1.0) == -1, name


@pytest.mark.parametrize("knob", CHOICE, ids=lambda k: k.name)
def test_categorical_bins_are_equal_and_centred(knob: knobs.Knob) -> None:
    n = len(knob.choices)
    width = 2.0 / n
    for i, choice in enumerate(knob.choices):
        centre = -1.0 + width * (i + 0.5)
        assert knob.to_unit(choice) == pytest.approx(centre)
        assert knob.from_unit(centre) == choice
        assert knob.from_unit(-1.0 + width * i + 1e-6) == choice  # just inside the bin's left edge
        assert knob.from_unit(-1.0 + width * (i + 1) - 1e-6) == choice  # just inside its right edge
    assert knob.from_unit(-1.0) == knob.choices[0]
    assert knob.from_unit(1.0) == knob.choices[-1]


def test_out_of_range_actions_are_clipped() -> None:
    k = REGISTRY["sched_slice_us"]
    assert k.from_unit(5.0) == k.from_unit(1.0) == k.high
    assert k.from_unit(-5.0) == k.from_unit(-1.0) == k.low


def test_unknown_knob_lists_the_known_ones() -> None:
    with pytest.raises(KnobError) as exc:
        knobs.get("halt_pol_ns")
    msg = str(exc.value)
    assert "halt_pol_ns" in msg
    for name in knobs.KNOB_NAMES:
        assert name in msg
    with pytest.raises(KnobError, match="halt_pol_ns"):
        knobs.validate_settings({"halt_pol_ns": 1})


@pytest.mark.parametrize(
    ("name", "value", "expect"),
    [
        ("vcpu_quota", 500, ["vcpu_quota", "out of range", "1000", "1000000", "-1"]),
        ("halt_poll_ns", 5_000_000, ["halt_poll_ns", "out of range", "10000", "1000000", "0 (off)"]),
        ("vcpu_count", 9, ["vcpu_count", "[1, 4]"]),
        ("vcpu_count", 2.5, ["vcpu_count", "not an integer"]),
        ("cpu_shares", "lots", ["cpu_shares", "not a number", "[2, 262144]"]),
        ("cpu_shares", True, ["cpu_shares", "not a number"]),
        ("cpu_shares", None, ["cpu_shares", "not a number"]),
        ("vcpu_pinning", "isolated", ["vcpu_pinning", "'shared'", "'dedicated'"]),
        ("vcpu_pinning", 1, ["vcpu_pinning", "'shared'", "'dedicated'"]),
        ("guest_haltpoll", "maybe", ["guest_haltpoll", "true or false"]),
        ("sched_slice_us", float("nan"), ["sched_slice_us", "not finite", "[100, 30000]"]),
        ("sched_slice_us", float("inf"), ["sched_slice_us", "not finite"]),
        ("vcpu_period", float("-inf"), ["vcpu_period", "not finite"]),
    ],
)
def test_bad_values_name_the_knob_and_what_is_accepted(name: str, value: object, expect: list[str]) -> None:
    with pytest.raises(KnobError) as exc:
        REGISTRY[name].validate(value)
    for part in expect:
        assert part in str(exc.value), (part, str(exc.value))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_unit_action_is_rejected_with_the_knob_name(bad: float) -> None:
    with pytest.raises(KnobError, match="vcpu_quota"):
        REGISTRY["vcpu_quota"].from_unit(bad)
    with pytest.raises(KnobError, match="idle_state"):
        knobs.decode([0.0, bad], ["halt_poll_ns", "idle_state"])


def test_validate_coerces_to_the_knob_type() -> None:
    assert REGISTRY["vcpu_quota"].validate(20000.0) == 20000
    assert isinstance(REGISTRY["vcpu_quota"].validate(20000.0), int)
    assert REGISTRY["vcpu_quota"].validate(-1.0) == -1
    assert REGISTRY["halt_poll_ns"].validate("0") == 0
    assert REGISTRY["guest_haltpoll"].validate("on") is True
    assert REGISTRY["guest_haltpoll"].validate(0) is False


def test_parse_assignment() -> None:
    assert knobs.parse_assignment("vcpu_quota=20000") == ("vcpu_quota", 20000)
    assert knobs.parse_assignment(" vcpu_quota = 20_000 ") == ("vcpu_quota", 20000)
    assert knobs.parse_assignment("vcpu_quota=-1") == ("vcpu_quota", -1)
    assert knobs.parse_assignment("vcpu_pinning=dedicated") == ("vcpu_pinning", "dedicated")
    assert knobs.parse_assignment("guest_haltpoll=true") == ("guest_haltpoll", True)
    with pytest.raises(KnobError, match="name=value"):
        knobs.parse_assignment("vcpu_quota")
    with pytest.raises(KnobError, match="known knobs"):
        knobs.parse_assignment("quota=20000")
    with pytest.raises(KnobError, match=r"vcpu_quota.*out of range"):
        knobs.parse_assignment("vcpu_quota=10")
    with pytest.raises(KnobError, match=r"vcpu_pinning.*'dedicated'"):
        knobs.parse_assignment("vcpu_pinning=isolated")


def test_encode_decode_are_inverse_on_defaults() -> None:
    names = knobs.KNOB_NAMES
    x = knobs.encode(knobs.defaults(), names)
    assert len(x) == len(names) and all(-1.0 <= v <= 1.0 for v in x)
    assert knobs.decode(x, names) == knobs.defaults()
    with pytest.raises(ValueError):
        knobs.decode([0.0], names)  # length mismatch


def test_knob_space_rejects_unknown_names() -> None:
    assert len(knobs.KnobSpace()) == len(KNOBS)
    assert len(knobs.KnobSpace(("vcpu_quota", "halt_poll_ns"))) == 2
    with pytest.raises(KnobError, match="nope"):
        knobs.KnobSpace(("vcpu_quota", "nope"))


def test_knobs_and_spaces_still_pickle_after_decoding() -> None:
    """Their cached decoders are closures: left out of the pickle (tuners and envs cross processes)."""
    import pickle

    space = knobs.KnobSpace(knobs.KNOB_NAMES)
    x = [0.3] * len(space)
    want = space.decode(x)
    again = pickle.loads(pickle.dumps(space))
    assert again == space and again.decode(x) == want
    knob = pickle.loads(pickle.dumps(knobs.get("vcpu_quota")))
    assert knob.from_unit(0.3) == knobs.get("vcpu_quota").from_unit(0.3)
