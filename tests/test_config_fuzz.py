"""Property-based tests of the experiment configs: every field of every model, bad and good values.

For each field (walked from the models themselves, so a new field is fuzzed without a new test) a bad
value of its kind (out of its bounds, NaN or infinite, a boolean or text for a number, a wrong type,
an unknown name) is refused with a ConfigError whose every line names the file, the dotted field path
and what the field accepts; a good value (integers also written as 1e5 or 100_000) is accepted as
given. Arbitrary YAML-like documents and --set overrides give a config or a ConfigError, never
another exception.
"""

from __future__ import annotations

import math
import typing
from dataclasses import dataclass
from typing import Any, Literal

import annotated_types as at
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from agents.config import AGENT_MODELS, SEED_MAX
from vvho.config import ConfigError, ExperimentConfig, apply_overrides, parse_config
from vvho_env import knobs
from vvho_env.config_base import _members, _unwrap
from vvho_env.scenarios import scenario_ids

SOURCE = "fuzz.yaml"
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@dataclass(frozen=True)
class Leaf:
    path: tuple[str, ...]
    annotation: Any
    meta: tuple[Any, ...]
    algorithm: str | None  # agent fields: the algorithm they belong to


def _leaves(model: type[BaseModel], prefix: tuple[str, ...] = (), algorithm: str | None = None) -> list[Leaf]:
    out = []
    for name, field in model.model_fields.items():
        if prefix == ("agent",) and name == "algorithm":
            continue
        if name == "agent" and not prefix:
            for alg, sub in AGENT_MODELS.items():
                out += _leaves(sub, ("agent",), alg)
            continue
        members = _members(field.annotation)
        if len(members) == 1 and isinstance(members[0], type) and issubclass(members[0], BaseModel):
            out += _leaves(members[0], (*prefix, name), algorithm)
            continue
        out.append(Leaf((*prefix, name), field.annotation, tuple(field.metadata), algorithm))
    return out


LEAVES = _leaves(ExperimentConfig)


def _bounds(meta: tuple[Any, ...]) -> tuple[float, float, bool, bool]:
    lo, hi, lo_open, hi_open = -math.inf, math.inf, False, False
    for m in meta:
        if isinstance(m, at.Ge):
            lo = float(m.ge)
        elif isinstance(m, at.Gt):
            lo, lo_open = float(m.gt), True
        elif isinstance(m, at.Le):
            hi = float(m.le)
        elif isinstance(m, at.Lt):
            hi, hi_open = float(m.lt), True
    return lo, hi, lo_open, hi_open


def _scalar(annotation: Any, meta: tuple[Any, ...]) -> tuple[Any, tuple[Any, ...]]:
    base, inner = _unwrap(annotation)
    members = _members(base)
    base = members[0] if len(members) == 1 else base
    base, inner2 = _unwrap(base)
    return base, (*meta, *inner, *inner2)


def bad_values(leaf: Leaf) -> st.SearchStrategy[Any]:
    """Values the field must refuse, by its kind and bounds."""
    name = leaf.path[-1]
    base, meta = _scalar(leaf.annotation, leaf.meta)
    not_numbers = st.sampled_from([True, False, "fast", "1e5x", "", [1], {"a": 1}])
    if leaf.path == ("env", "scenario"):
        return st.text(min_size=1, max_size=20).filter(lambda s: s not in scenario_ids()) | st.just(5)
    if leaf.path == ("env", "knob_names"):
        unknown = st.from_regex(r"[a-z_]{1,14}", fullmatch=True).filter(lambda s: s not in knobs.REGISTRY)
        return st.lists(unknown, min_size=1, max_size=3) \
            | st.just([]) | st.just(["vcpu_quota", "vcpu_quota"]) | st.just("vcpu_quota")
    if leaf.path == ("suite",):
        return st.sampled_from(["no-such-suite", "core.yml.txt", 5, [1], {"a": 1}, True])
    if leaf.path == ("tracking", "uri"):
        return st.sampled_from(["ftp://host/x", "results/mlflow.db", "sqlite://relative.db", "s3://bucket", 5])
    if leaf.path == ("tracking", "experiment"):
        return st.sampled_from(["", 5, [1], "x" * 300])
    if name == "ent_coef" and leaf.algorithm == "sac":
        return st.sampled_from(["fast", "auto_", "auto_-1", "auto_nan", 0, -0.1, math.inf, math.nan, True, [1]])
    if typing.get_origin(base) is list or typing.get_origin(_unwrap(leaf.annotation)[0]) is list:
        (item,) = typing.get_args(_members(leaf.annotation)[0])
        _, item_meta = _scalar(item, ())
        lo, _, _, _ = _bounds(item_meta)
        bad_item = st.sampled_from([lo - 1 if math.isfinite(lo) else "x", "x", math.nan, True, [1]])
        return st.lists(bad_item, min_size=1, max_size=3) | st.sampled_from(["64", 64, {"a": 1}])
    if typing.get_origin(base) is Literal:
        choices = typing.get_args(base)
        return st.text(max_size=12).filter(lambda s: s not in choices) | st.sampled_from([1, None, [choices[0]]])
    if base is bool:
        return st.sampled_from(["maybe", 2, -1, 0.5, [True], {"a": 1}, None])
    if base in (int, float):
        lo, hi, lo_open, hi_open = _bounds(meta)
        outside = []
        if math.isfinite(lo):
            outside.append(st.floats(lo - 1e9, lo, exclude_max=not lo_open).map(lambda v: int(v) - 1
                                                                                if base is int else v))
        if math.isfinite(hi):
            outside.append(st.floats(hi, hi + 1e9, exclude_min=not hi_open).map(lambda v: int(v) + 1
                                                                                if base is int else v))
            outside.append(st.just(1e308))
        specials = st.sampled_from([math.nan, math.inf, -math.inf])
        fractional = st.just(2.5) if base is int else st.nothing()
        if name == "gradient_steps":
            outside.append(st.just(0))
        return st.one_of(*outside, specials, not_numbers, fractional)
    raise AssertionError(f"no bad values for {leaf.path}: {base!r}")


def _e_form(v: int) -> str:
    """An integer as YAML would read a string: 100000 -> '1e5', 250 -> '25e1', 7 -> '7e0'."""
    k = 0
    while v and v % 10 ** (k + 1) == 0:
        k += 1
    return f"{v // 10**k}e{k}"


def good_values(leaf: Leaf) -> st.SearchStrategy[tuple[Any, Any]]:
    """(value as written, value the model must hold) pairs that the field accepts."""
    base, meta = _scalar(leaf.annotation, leaf.meta)
    lo, hi, lo_open, hi_open = _bounds(meta)
    if base is int:
        lo_i = int(lo) + (1 if lo_open else 0) if math.isfinite(lo) else -10**6
        hi_i = int(hi) - (1 if hi_open else 0) if math.isfinite(hi) else 10**6
        ints = st.integers(lo_i, hi_i)
        if leaf.path[-1] == "gradient_steps":
            ints = ints.filter(lambda v: v != 0)
        return ints.flatmap(lambda v: st.sampled_from([(v, v), (float(v), v), (f"{v:_}", v), (_e_form(v), v)]))
    if base is float:
        floats = st.floats(lo if math.isfinite(lo) else -1e6, hi if math.isfinite(hi) else 1e6,
                           exclude_min=lo_open, exclude_max=hi_open, allow_nan=False, allow_infinity=False)
        return floats.map(lambda v: (v, v))
    if base is bool:
        return st.booleans().map(lambda v: (v, v))
    if typing.get_origin(base) is Literal:
        return st.sampled_from(typing.get_args(base)).map(lambda v: (v, v))
    return st.nothing()


def _document(leaf: Leaf, value: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    node = doc
    for part in leaf.path[:-1]:
        node = node.setdefault(part, {})
    node[leaf.path[-1]] = value
    if leaf.algorithm is not None:
        doc["agent"]["algorithm"] = leaf.algorithm
        if leaf.algorithm in ("sac", "td3"):
            doc["agent"].setdefault("learning_starts", 0)
    return doc


def _assert_clear(exc: ConfigError, leaf: Leaf | None = None) -> None:
    lines = str(exc).splitlines()
    assert lines
    for line in lines:
        assert line.startswith(SOURCE + ": ") or line.startswith("--set "), line
        assert "accepted" in line, line
        assert "Traceback" not in line and "pydantic" not in line and "errors.pydantic.dev" not in line, line
    if leaf is not None:
        assert any(f"field {'.'.join(leaf.path)}" in line for line in lines), (leaf.path, lines)


@pytest.mark.parametrize("leaf", LEAVES, ids=lambda lf: ".".join(lf.path) + (f"[{lf.algorithm}]"
                                                                            if lf.algorithm else ""))
def test_every_field_refuses_bad_values_clearly(leaf: Leaf) -> None:
    @FUZZ
    @given(bad_values(leaf))
    def check(value: Any) -> None:
        with pytest.raises(ConfigError) as err:
            parse_config(_document(leaf, value), SOURCE)
        _assert_clear(err.value, leaf)

    check()


GOOD = [lf for lf in LEAVES if lf.path not in {("train", "seed"), ("train", "n_envs"), ("train", "total_timesteps"),
                                                ("agent", "batch_size"), ("agent", "n_steps"),
                                                ("agent", "learning_starts")}
        and not good_values(lf).is_empty]


@pytest.mark.parametrize("leaf", GOOD, ids=lambda lf: ".".join(lf.path) + (f"[{lf.algorithm}]" if lf.algorithm
                                                                           else ""))
def test_every_field_accepts_good_values_as_given(leaf: Leaf) -> None:
    @FUZZ
    @given(good_values(leaf))
    def check(pair: tuple[Any, Any]) -> None:
        written, expected = pair
        cfg = parse_config(_document(leaf, written), SOURCE)
        node: Any = cfg
        for part in leaf.path:
            node = getattr(node, part)
        assert node == expected

    check()


@FUZZ
@given(seed=st.integers(0, SEED_MAX), n_envs=st.integers(1, 64), total=st.integers(1, 10**10),
       spelled=st.booleans())
def test_cross_field_checks(seed: int, n_envs: int, total: int, spelled: bool) -> None:
    """Held-out eval seeds, rollouts that hold a batch, off-policy agents that get to learn: refused
    with the field to change, accepted otherwise."""
    doc: dict[str, Any] = {"agent": {"batch_size": 2}, "train": {
        "seed": f"{seed:_}" if spelled else seed, "n_envs": n_envs, "total_timesteps": total,
        "eval_seeds": [seed + n_envs - 1] if seed + n_envs - 1 <= SEED_MAX else [seed]}}
    with pytest.raises(ConfigError) as err:
        parse_config(doc, SOURCE)
    _assert_clear(err.value)
    assert "field train.eval_seeds" in str(err.value)
    held_out = max(0, seed - 1) if seed > 0 else seed + n_envs
    assume(held_out <= SEED_MAX)
    doc["train"]["eval_seeds"] = [held_out]
    cfg = parse_config(doc, SOURCE)
    assert cfg.train.seed == seed and cfg.train.total_timesteps == total
    with pytest.raises(ConfigError, match=r"field agent\.batch_size"):
        parse_config({"agent": {"n_steps": 1, "batch_size": n_envs + 1}, "train": {"n_envs": n_envs}}, SOURCE)
    with pytest.raises(ConfigError, match=r"field agent\.learning_starts"):
        parse_config({"agent": {"algorithm": "td3", "learning_starts": min(total, 10**10)},
                      "train": {"total_timesteps": min(total, 10**10)}}, SOURCE)


def test_partial_agent_section_is_ppo_and_empty_sections_are_defaults() -> None:
    cfg = parse_config({"agent": {"learning_rate": 1e-4}}, SOURCE)
    assert cfg.algorithm == "ppo" and cfg.agent.learning_rate == 1e-4
    cfg = parse_config({"agent": None, "train": {"total_timesteps": "1e5"}}, SOURCE)
    assert cfg.algorithm == "ppo" and cfg.train.total_timesteps == 100_000


@pytest.mark.parametrize("raw", [None, {}, {"agent": None}, {"env": {}, "tracking": None}])
def test_a_config_that_sets_nothing_is_refused(raw: Any) -> None:
    with pytest.raises(ConfigError, match="sets nothing"):
        parse_config(raw, SOURCE)


def test_switching_algorithm_drops_what_does_not_apply_and_refuses_what_was_set() -> None:
    notes: list[str] = []
    base = {"agent": {"algorithm": "ppo", "n_steps": 64, "clip_range": 0.1, "ent_coef": 0.01,
                      "learning_rate": 1e-3}}
    cfg = parse_config(base, SOURCE, ["agent.algorithm=sac"], notes)
    assert cfg.algorithm == "sac" and cfg.agent.learning_rate == 1e-3 and cfg.agent.ent_coef == "auto"
    assert notes and "agent.clip_range" in notes[0] and "agent.ent_coef" in notes[0]
    with pytest.raises(ConfigError, match=r"--set agent\.clip_range=0\.3: field agent\.clip_range: does not "
                                          r"apply to sac.*a field of ppo"):
        parse_config(base, SOURCE, ["agent.algorithm=sac", "agent.clip_range=0.3"])


def test_did_you_mean() -> None:
    with pytest.raises(ConfigError, match=r"field agent\.learning_rat: unknown field \(did you mean "
                                          r"'learning_rate'\?\)"):
        parse_config({"agent": {"learning_rat": 0.1}}, SOURCE)
    with pytest.raises(ConfigError, match=r"did you mean 'halt_poll_ns'"):
        parse_config({"env": {"knob_names": ["halt_pol_ns"]}}, SOURCE)
    with pytest.raises(ConfigError, match=r"did you mean 'diurnal-noisy-v1'"):
        parse_config({"env": {"scenario": "diurnal-noisy-v9"}}, SOURCE)
    with pytest.raises(ConfigError, match=r"field agent\.algorithm: 'ppp' not accepted \(did you mean 'ppo'\?\)"):
        parse_config({"agent": {"algorithm": "ppp"}}, SOURCE)


def test_knobs_the_host_profile_cannot_set_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"field env\.knob_names: .*cannot be set on host profile 'tcg-testbed'"):
        parse_config({"env": {"scenario": "testbed-echo-v0", "knob_names": ["idle_state"]}}, SOURCE)


YAMLISH = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                       lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                                   max_size=3), max_leaves=12)
SECTIONS = st.fixed_dictionaries({}, optional={
    "env": st.dictionaries(st.sampled_from(["scenario", "knob_names", "history", "max_steps", "x"]), YAMLISH,
                           max_size=2),
    "agent": st.dictionaries(st.sampled_from(["algorithm", "learning_rate", "net_arch", "ent_coef", "clip_range",
                                              "gamma", "n_stepz"]), YAMLISH, max_size=3),
    "train": st.dictionaries(st.sampled_from(["seed", "n_envs", "eval_seeds", "total_timesteps"]), YAMLISH,
                             max_size=2),
    "tracking": st.dictionaries(st.sampled_from(["uri", "experiment"]), YAMLISH, max_size=2),
    "extra": YAMLISH,
})


@settings(max_examples=300, deadline=None)
@given(st.one_of(SECTIONS, YAMLISH))
def test_any_document_gives_a_config_or_a_clear_error(raw: Any) -> None:
    try:
        parse_config(raw, SOURCE)
    except ConfigError as exc:
        assert str(exc).startswith(SOURCE + ": ")
        for line in str(exc).splitlines():
            assert line.startswith(SOURCE + ": ") and "accepted" in line, line


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(alphabet=st.sampled_from("agentrainvs.=_:[]{}, 0123456789-e"), max_size=24), max_size=3))
def test_any_set_override_gives_a_config_or_a_clear_error(overrides: list[str]) -> None:
    try:
        apply_overrides({"agent": {"algorithm": "ppo"}}, overrides)
        parse_config({"agent": {"algorithm": "ppo"}}, SOURCE, overrides)
    except ConfigError as exc:
        for line in str(exc).splitlines():
            assert line.startswith((SOURCE + ": ", "--set ")) and "accepted" in line, line
