"""The simulator reproduces the published figures of ../shared/calibration.yaml and
vvho_env/sim/calibration_points.yaml within +-20%.

Each fixture (workload, knobs, host profile) is stated in vvho_env/sim/calibration.py; the exit-cost
and halt-poll rows come from the simulator's event trace. A figure the simulator misses today is an
xfail(strict) test naming the measured figure and the mechanism issue 8 says is missing: it is not
loosened, and it fails (XPASS) once the physics is fixed, so that it is then turned into a plain test.
"""

import re
from pathlib import Path

import pytest
import yaml

from vvho_env.sim import calibration as C
from vvho_env.sim import profiles
from vvho_env.sim.engine.polling import adapt_window
from vvho_env.sim.profiles import XEON_KVM

CAL = Path(__file__).resolve().parents[2] / "shared" / "calibration.yaml"


def published() -> dict:
    if not CAL.exists():  # the calibration file sits beside the checkout; fall back to its figures
        return {}
    return {p["id"]: p for p in yaml.safe_load(CAL.read_text())["points"]}


def _check(r: C.Result) -> None:
    assert r.within(0.2), f"{r.name}: measured {r.measured:.2f} {r.unit}, published {r.published} {r.unit}"


def test_fixture_figures_match_the_calibration_file() -> None:
    pts = published()
    if not pts:
        pytest.skip(f"{CAL} not present")
    assert pts["halt-poll-tcp-rr"]["value_a_us"] == 34.0 and pts["halt-poll-tcp-rr"]["value_b_us"] == 27.0
    assert pts["vm-vs-native-ping"]["default_vm_us"] == 34.0
    assert pts["cfs-bandwidth-throttle"]["completion_ms"] == 66.0
    assert pts["vm-exit-cost"]["cycles_range"] == [2000, 2528]
    assert pts["halt-poll-defaults"]["halt_poll_ns_grow_start"] == XEON_KVM.halt_poll_grow_start


def test_halt_polling_tcp_rr() -> None:
    no_poll, poll = C.halt_poll_tcp_rr()
    _check(no_poll)
    _check(poll)
    assert poll.measured < no_poll.measured


def test_halt_polling_cpu_cost_idle_guest() -> None:
    none, adaptive, always = C.halt_poll_cpu_cost()
    _check(none)
    _check(adaptive)
    lo, hi = always.published  # type: ignore[misc]
    assert lo <= always.measured <= hi, always


def test_vm_vs_native_ping() -> None:
    default, tuned = C.vm_vs_native_ping()
    _check(default)
    _check(tuned)


def test_cfs_bandwidth_throttling() -> None:
    throttled, free = C.cfs_bandwidth_throttle()
    _check(throttled)
    _check(free)


def test_vm_exit_cost_emerges_from_trace() -> None:
    r = C.vm_exit_cost()
    lo, hi = r.published  # type: ignore[misc]
    assert lo <= r.measured <= hi, r


def kvm_reference(win: int, block: int, cap: int = 200_000) -> int:
    """KVM's grow/shrink written from Documentation/virt/kvm/halt-polling.rst, independently."""
    if block <= win:
        return win
    if win and block > cap:
        return 0  # halt_poll_ns_shrink = 0: reset
    if win < cap and block < cap:
        return min(max(win * 2, 10_000), cap)  # grow x2, starting at 10 us
    return win


def test_halt_poll_window_trace_follows_kvm() -> None:
    halts, wins = C.halt_poll_trace(1.0)
    assert len(wins) > 200
    # pair each window update with the halt that preceded it, replay KVM's rule, compare
    events = sorted([(int(t), 0, int(v)) for t, _, _, v in halts] + [(int(t), 1, int(v)) for t, _, _, v in wins])
    halt_t, win, checked = None, 0, 0
    seen = set()
    for t, kind, v in events:
        if kind == 0:
            halt_t = t
            assert v == win, "the window in force at HLT is the last one computed"
        elif halt_t is None:
            win = v  # the first wake-up after boot: no HLT of ours precedes it
        else:
            expected = kvm_reference(win, t - halt_t)
            assert v == expected, f"block {t - halt_t} ns from window {win}: KVM gives {expected}, sim {v}"
            if expected > win:
                seen.add("grow-start" if win == 0 else "grow")
            if expected == 0 and win:
                seen.add("shrink-to-0")
            if expected == 200_000:
                seen.add("cap")
            win = v
            checked += 1
    assert checked > 200
    assert {"grow-start", "grow", "shrink-to-0"} <= seen, seen


def test_adapt_window_cap_is_reached_and_held() -> None:
    w = 0
    for _ in range(10):
        w = adapt_window(w, 190_000, 200_000, 2.0, 10_000.0, 0.0)
    assert w == 200_000


# ================================================================== calibration_points.yaml: every point, its role
POINTS = C.load_points()
FITTED = re.compile(r"(?<!not )\bfitted\b", re.IGNORECASE)  # "Fitted to ...", not "not fitted to a figure"
# the six points of ../shared/calibration.yaml, two of them split into a fit and a check entry
FIRST_SIX = {"halt-poll-tcp-rr", "halt-poll-cpu-cost", "halt-poll-cpu-cost-polling", "vm-vs-native-ping",
             "vm-vs-native-ping-passthrough", "cfs-bandwidth-throttle", "vm-exit-cost", "halt-poll-defaults"}
NUMBER = re.compile(r"(?<![\w.,])\d[\d,]*(?:\.\d+)?(?![\w.])")  # 1.1, 34, 2,000; not C1, aca6ff29, x86


def _flat(published: list) -> list[float]:
    return [float(v) for p in published for v in (p if isinstance(p, list) else [p])]


def _field_comments() -> dict[str, str]:
    """Each HostProfile field's comment in profiles.py: the comment lines right above it and its inline one."""
    src = Path(profiles.__file__).read_text().split("class HostProfile", 1)[1].split("def to_array", 1)[0]
    out, block = {}, []
    for line in src.splitlines():
        s = line.strip()
        if s.startswith("#"):
            block.append(s.lstrip("#").strip())
            continue
        m = re.match(r"(\w+): [^=]+=[^#]*(?:#(.*))?$", s)
        if m:
            out[m.group(1)] = " ".join([*block, m.group(2) or ""])
        block = []
    return out


def _shares_source(a: dict, b: dict) -> bool:
    return bool(set(a["source_keys"]) & set(b["source_keys"]))


def test_every_point_has_a_fixture_a_source_and_a_role() -> None:
    ids = [p["id"] for p in POINTS]
    assert len(ids) == len(set(ids)), ids
    fields = set(profiles.PROFILE_FIELDS)
    for p in POINTS:
        assert p["group"] in ("R", "C", "S"), p["id"]
        assert p["source"].strip() and p["what"].strip() and p["unit"], p["id"]
        assert p["source_keys"] and all(k in p["source"] for k in p["source_keys"]), p["id"]
        assert callable(getattr(C, p["fixture"], None)), f"{p['id']}: no fixture {p['fixture']!r}"
        assert p["role"] in ("fit", "check"), p["id"]
        if p["role"] == "fit":
            assert p["fits"] and set(p["fits"]) <= fields, p["id"]
        else:
            assert "fits" not in p, p["id"]
    new = [p for p in POINTS if p["id"] not in FIRST_SIX]
    assert len(new) >= 8 and {p["group"] for p in new} >= {"R", "C", "S"}, new


def test_fixture_rows_carry_the_published_figures_of_the_file() -> None:
    for p in POINTS:
        rows = C.rows(p)
        assert len(rows) == len(p["published"]), p["id"]
        for r, pub in zip(rows, p["published"], strict=True):
            want = tuple(pub) if isinstance(pub, list) else pub
            assert r.published == pytest.approx(want, rel=1e-3), f"{p['id']}: {r.name}"


def test_no_check_figure_is_the_fit_target_of_a_constant() -> None:
    """A constant whose comment in profiles.py says it was fitted must be claimed by a 'fit' point, and no
    'check' point sharing that source may have a figure in the constant's comment."""
    comments = _field_comments()
    fitted = {f for f, c in comments.items() if FITTED.search(c)}
    assert {"vcpu_wake_ns", "tick_ns"} <= fitted, fitted  # the parser finds the documented fits
    fit_points = [p for p in POINTS if p["role"] == "fit"]
    declared = {f: p for p in fit_points for f in p["fits"]}
    assert fitted <= set(declared), f"fitted constants not declared by a fit point: {fitted - set(declared)}"
    for f, owner in declared.items():
        if f in fitted:  # the comment names the figure it was fitted to: the owner's
            nums = {float(n.replace(",", "")) for n in NUMBER.findall(comments[f])}
            assert nums & set(_flat(owner["published"])), f"{f}: comment {comments[f]!r} vs {owner['id']}"
    for chk in (p for p in POINTS if p["role"] == "check"):
        clash = _clashes(chk, comments, fitted, declared)
        assert not clash, f"check point {chk['id']}: figures {clash} are fit targets"
    # the rule bites: the TCP_RR figures, were they called a check, are vcpu_wake_ns's fit target
    tcp_rr = next(p for p in POINTS if p["id"] == "halt-poll-tcp-rr")
    assert _clashes({**tcp_rr, "role": "check"}, comments, fitted, declared) == {"vcpu_wake_ns": {34.0, 27.0}}


def _clashes(chk: dict, comments: dict[str, str], fitted: set[str], declared: dict[str, dict]) -> dict:
    """Figures of `chk` that appear in the comment of a fitted constant about the same source."""
    out = {}
    for f in sorted(fitted | set(declared)):
        text = comments[f]
        about = any(k.lower() in text.lower() for k in chk["source_keys"]) or (
            f in declared and declared[f]["id"] != chk["id"] and _shares_source(chk, declared[f]))
        nums = {float(n.replace(",", "")) for n in NUMBER.findall(text)} & set(_flat(chk["published"]))
        if about and nums:
            out[f] = nums
    return out


# ================================================================== the points added for issue 8
def _row(point_id: str, i: int = 0) -> C.Result:
    return C.rows(next(p for p in POINTS if p["id"] == point_id))[i]


def test_guest_haltpoll_pingpong() -> None:
    host, guest = C.guest_haltpoll_pingpong()
    _check(host)
    _check(guest)
    assert guest.measured < host.measured  # guest polling avoids the exit and the host wake-up


@pytest.mark.xfail(strict=True, reason="measured -0.2% vs published +2% (before the shared-lock model: +83%): "
                   "the lock is now shared state with PLE grow/shrink and directed yield, but without wake-up "
                   "preemption a vCPU is almost never descheduled while it holds the lock, so PLE has no "
                   "lock-holder preemption to cut (issue 8)")
def test_ple_gain_under_overcommit() -> None:
    _check(C.ple_overcommit_kernbench())


def test_cfs_quota_examples() -> None:
    one, two = C.cfs_quota_examples()
    _check(one)
    _check(two)


@pytest.mark.xfail(strict=True, reason="measured 80.9% vs published 66.7%: cpu_shares weights each vCPU thread, "
                   "not the VM's cgroup, so a 2-vCPU VM gets twice its configured weight (issue 8)")
def test_cpu_shares_ratio() -> None:
    _check(C.cpu_shares_ratio())


def test_rt_throttle_leaves_sched_other_its_share() -> None:
    _check(C.rt_throttle_share())


@pytest.mark.xfail(strict=True, reason="measured 116.5 us (16.0 us with rx_usecs=0, against 16.5 without busy "
                   "polling) vs published 11.9-14.1 us: busy polling only skips the host halt/wake, not the "
                   "interrupt, the guest softirq and the application wake-up, and a polled packet still waits "
                   "for the coalescing timer (issue 8)")
def test_busy_poll_tcp_rr() -> None:
    _check(C.busy_poll_tcp_rr()[1])


@pytest.mark.xfail(strict=True, reason="measured 7.29 vs published 0.94: rx_usecs is a pure delay, paid by a "
                   "busy-polled packet too, while interrupt and exit CPU stay per packet (issue 8)")
def test_coalescing_under_busy_poll() -> None:
    _check(C.coalescing_under_busy_poll())


def test_cstates_cost_a_busy_polling_core_nothing() -> None:
    _check(C.cstates_under_busy_poll())
