"""Held-out scenario variants: new scenarios generated from a catalogue scenario, never trained on.

``held_out(base, n)`` changes every dimension a policy could have overfitted to, each by an amount
drawn from the variant number ``n`` (deterministic: the same base and number give the same scenario,
in any process):

- request rates: all phases scaled by one factor in [0.8, 1.25], each by a further [0.9, 1.1];
- the SLO: scaled log-uniformly in [0.6, 1.6] (the tail the objective judges moves with it);
- phase order: a permutation other than the original (a scenario with one phase keeps it);
- phase lengths: each scaled by [0.6, 1.6] (at least 10 intervals, as every phase);
- neighbour pattern: the per-pCPU demand list rotated and scaled by [0.6, 1.4], and with probability
  1/2 the phases' neighbour patterns shuffled among them (load and neighbours decorrelated);
- quotas: with probability 1/2 (where the host profile can set it and the base has none) a CFS quota
  of 50-90% of a 100 ms period in the start settings, which a method must lift to meet the SLO.

A variant's id is ``BASE~N`` (that string loads it wherever a scenario is accepted) and its content
hash tells it apart from its base and from every other variant. Training mixtures use catalogue
scenarios with per-episode jitter; the suites check that no held-out variant equals a training
scenario (``vvho.suites``).
"""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np

from vvho_env.scenarios import Scenario, ScenarioError, load_scenario
from vvho_env.sim.profiles import get_profile

SEPARATOR = "~"
QUOTA_PERIOD_US = 100_000


def from_ref(ref: str) -> Scenario:
    """The variant a reference ``BASE~N`` names (BASE: a catalogue id or a scenario file)."""
    base, _, number = ref.rpartition(SEPARATOR)
    if not base or not number.isdigit():
        raise ScenarioError(f"held-out variant {ref!r} not accepted; accepted: BASE{SEPARATOR}N with BASE a scenario "
                            "id or file and N an integer >= 0 (e.g. diurnal-noisy-v1~1)")
    return held_out(load_scenario(base), int(number))


def held_out(base: Scenario, n: int) -> Scenario:
    """Variant number `n` of `base` (module docstring)."""
    if n < 0:
        raise ScenarioError(f"held-out variant number {n} not accepted; accepted: an integer >= 0")
    rng = np.random.default_rng([n, zlib.crc32(base.id.encode())])
    notes: list[str] = []
    phases = [ph.model_dump(mode="json") for ph in base.phases]

    rate = float(rng.uniform(0.8, 1.25))
    for ph in phases:
        k = rate * float(rng.uniform(0.9, 1.1))
        ph["rate_rps"] = ph["rate_rps"] * k
        if ph.get("rate_end_rps") is not None:
            ph["rate_end_rps"] = ph["rate_end_rps"] * k
    notes.append(f"rates x{rate:.2f}")

    slo = float(np.exp(rng.uniform(np.log(0.6), np.log(1.6))))
    notes.append(f"SLO x{slo:.2f}")

    if len(phases) > 1:
        order = list(range(len(phases)))
        while order == sorted(order):
            order = [int(i) for i in rng.permutation(len(phases))]
        phases = [phases[i] for i in order]
        notes.append("phase order " + ", ".join(ph["name"] for ph in phases))

    for ph in phases:
        ph["intervals"] = max(10, round(ph["intervals"] * float(rng.uniform(0.6, 1.6))))
    notes.append("lengths " + "/".join(str(ph["intervals"]) for ph in phases))

    shift = int(rng.integers(0, 4))
    scale = float(rng.uniform(0.6, 1.4))
    for ph in phases:
        d = list(ph["neighbour_demand"])
        d = d[shift % len(d):] + d[: shift % len(d)]
        ph["neighbour_demand"] = [min(1.0, max(0.0, x * scale)) for x in d]
    notes.append(f"neighbours rotated by {shift}, x{scale:.2f}")
    if len(phases) > 1 and rng.random() < 0.5:
        patterns = [ph["neighbour_demand"] for ph in phases]
        perm = [int(i) for i in rng.permutation(len(phases))]
        for ph, i in zip(phases, perm, strict=True):
            ph["neighbour_demand"] = patterns[i]
        notes.append("neighbour patterns shuffled among phases")

    base_settings: dict[str, Any] = dict(base.base_settings)
    quota_draw = float(rng.uniform(0.5, 0.9))
    if (rng.random() < 0.5 and "vcpu_quota" in get_profile(base.host_profile).settable
            and int(base_settings.get("vcpu_quota", -1)) < 0):
        base_settings.update(vcpu_quota=round(quota_draw * QUOTA_PERIOD_US), vcpu_period=QUOTA_PERIOD_US)
        notes.append(f"vcpu_quota {base_settings['vcpu_quota']}/{QUOTA_PERIOD_US} us at start")

    data = base.model_dump(mode="json")
    data.update(id=f"{base.id}{SEPARATOR}{n}", slo_us=base.slo_us * slo, phases=phases,
                base_settings=base_settings,
                description=f"held-out variant {n} of {base.id}: " + "; ".join(notes) + ".")
    return Scenario.model_validate(data)
