"""The simulator's mechanisms written plainly with SimPy: the reference that checks vvho_env/sim/engine/.

Same host profile, same knob settings, same scenario phase, same mechanisms as the numba engine, but an
independent implementation: every scheduled thread (vCPUs, the virtio backend thread, one neighbour per
pCPU) is a SimPy process that asks its pCPU for CPU work, and every pCPU is a SimPy process that runs
its current thread until the work is done, its slice or budget ends, or a wake-up changes the plan.

What a request pays, in order:
  Poisson / MMPP arrival -> NIC rx coalescing timer -> backend (QEMU userspace or vhost-net thread on a
  pCPU; PMD or SR-IOV as a pure delay) -> interrupt to the guest (a polling vCPU finds it, else a halted
  vCPU is woken round-robin, else the request waits in the guest's FCFS queue) -> guest rx + service
  (LLC interference from running neighbours) + tx -> transmit kick (an exit) -> backend tx -> done.
Host side: KVM halt-polling with its grow/shrink rule (stops as soon as another task is runnable on
the pCPU), guest haltpoll, busy poll, guest timer ticks, a menu-like idle governor choosing the C-state
exit latency, per-pCPU EEVDF as in kernel/sched/fair.c 6.6+ (place_entity with the sleeper's lag
inflated by (W + w) / W, lag clamped to max(2 slices, one tick) of service; entity_eligible against the
weighted average vruntime; pick_eevdf: earliest eligible deadline; update_deadline gives a new slice once
the deadline is reached; check_preempt_wakeup_fair: a waking thread preempts when pick_eevdf with it
queued returns it, RUN_TO_PARITY protecting the current thread only while it is eligible and still on
the slice it was picked with; a served slice is noticed at the next host tick, or at a wake-up's
update_curr) under a FIFO class with RT throttling, CFS bandwidth buckets. The pre-6.6 CFS generation is not modelled
(profiles with sched_gen="cfs" are rejected).

Not modelled here (the engine has them): guest spinlocks / pause-loop exiting, closed-loop clients,
restart outages, knob changes mid-run. Scenarios that need them are rejected with ScenarioError.

Randomness comes from Python's ``random`` (not the engine's stream): the two models agree in
distribution, not sample by sample.
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Generator, Mapping
from dataclasses import dataclass

import numpy as np
import simpy

from vvho_env import knobs
from vvho_env.scenarios import Phase, Scenario, ScenarioError
from vvho_env.sim.profiles import HostProfile, get_profile

NEVER = 2**62

# thread states
SLEEP, RUNNABLE, RUNNING, THROTTLED = "sleep", "runnable", "running", "throttled"
# what a thread is doing on its pCPU
NONE, WORK, TICK, KICK, BPOLL, GPOLL, HPOLL, RESUME = (
    "none", "work", "tick", "kick", "busy-poll", "guest-poll", "host-poll", "resume")
POLLS = (BPOLL, GPOLL, HPOLL)
CSTATES = {"C1": 0, "C1E": 1, "C6": 2}


@dataclass(frozen=True)
class Config:
    """Knob settings and workload of one run, in ns."""

    dedicated: bool
    vcpu_quota_ns: int | None
    period_ns: int
    emulator_quota_ns: int | None
    global_quota_ns: int | None
    shares: float
    emulator_on_housekeeping: bool
    n_vcpu: int
    backend: str
    rx_coalesce_ns: int
    busy_poll_ns: int
    halt_poll_ns: int
    guest_haltpoll: bool
    fifo: bool
    slice_ns: int
    deepest_cstate: int
    rate_rps: float
    mmpp_mult: float
    mmpp_on_ns: float
    mmpp_off_ns: float
    service_mean_ns: float
    service_cv: float
    long_frac: float
    long_mult: float
    client_rtt_ns: int
    neighbour_demand: tuple[float, ...]

    @classmethod
    def of(cls, settings: Mapping[str, knobs.KnobValue], sc: Scenario, ph: Phase, frac: float) -> Config:
        if sc.closed_loop or ph.lock_prob > 0:
            raise ScenarioError(f"{sc.id}/{ph.name}: the SimPy reference models neither closed-loop clients "
                                "nor guest spinlocks; pick an open-loop phase with lock_prob 0")

        def quota(v: knobs.KnobValue) -> int | None:
            return None if int(v) < 0 else int(v) * 1000

        return cls(
            dedicated=settings["vcpu_pinning"] == "dedicated",
            vcpu_quota_ns=quota(settings["vcpu_quota"]),
            period_ns=int(settings["vcpu_period"]) * 1000,
            emulator_quota_ns=quota(settings["emulator_quota"]),
            global_quota_ns=quota(settings["global_quota"]),
            shares=float(settings["cpu_shares"]),
            emulator_on_housekeeping=settings["emulator_placement"] == "housekeeping",
            n_vcpu=min(int(settings["vcpu_count"]), 4),
            backend=str(settings["virtio_backend"]),
            rx_coalesce_ns=int(settings["rx_usecs"]) * 1000,
            busy_poll_ns=int(settings["busy_poll_us"]) * 1000,
            halt_poll_ns=int(settings["halt_poll_ns"]),
            guest_haltpoll=bool(settings["guest_haltpoll"]),
            fifo=settings["vcpu_sched_policy"] == "fifo",
            slice_ns=int(settings["sched_slice_us"]) * 1000,
            deepest_cstate=CSTATES[str(settings["idle_state"])],
            rate_rps=ph.rate_at(frac),
            mmpp_mult=ph.mmpp_mult,
            mmpp_on_ns=ph.mmpp_on_ms * 1e6,
            mmpp_off_ns=ph.mmpp_off_ms * 1e6,
            service_mean_ns=ph.service_mean_us * 1000.0,
            service_cv=ph.service_cv,
            long_frac=ph.long_frac,
            long_mult=ph.long_mult,
            client_rtt_ns=int(sc.client_rtt_us * 1000),
            neighbour_demand=ph.neighbour_demand,
        )


def kvm_poll_window(win: int, block_ns: int, cap: int, grow: float, grow_start: float, shrink: float) -> int:
    """Next halt-poll window after a halt of block_ns (kvm_vcpu_halt; haltpoll.c does the same)."""
    if win > cap:
        return cap
    if block_ns <= win:  # the poll caught the wake-up: keep the window
        return win
    if win > 0 and block_ns > cap:  # a long block: polling was wasted, shrink
        new = 0 if shrink == 0 else int(win / shrink)
        return 0 if new < grow_start else new
    if win < cap and block_ns < cap:  # a short block the window just missed: grow
        if grow == 0:
            return win
        return min(max(int(win * grow), int(grow_start)), cap)
    return win


class Bucket:
    """CFS bandwidth: CPU time used in the current period against a quota (None = unlimited)."""

    def __init__(self, quota_ns: int | None) -> None:
        self.quota_ns = quota_ns
        self.used_ns = 0


class Thread:
    """A host thread: a SimPy process that runs activities (CPU work) on one of its allowed pCPUs."""

    def __init__(self, host: Host, kind: str, mask: list[int], buckets: list[Bucket],
                 fifo: bool = False) -> None:
        self.host = host
        self.env = host.env
        self.kind = kind
        self.mask = mask  # allowed pCPU indices, ascending
        self.buckets = buckets
        self.fifo = fifo
        self.weight = 1024.0
        self.state = SLEEP
        self.cpu: PCpu | None = None  # where it runs, is queued, or last ran
        self.vruntime = 0.0
        self.deadline = 0.0
        self.lag = 0.0
        self.pick_deadline = -1.0  # deadline when last picked (set_next_entity): RUN_TO_PARITY's slice
        self.runnable_since = 0
        self.act = NONE
        self.rem = 0  # ns of work left in the current activity
        self.pending = False  # an activity is in progress (False between activities and while asleep)
        self.needs_entry = False  # a VM entry is due when it next runs
        self.done = self.env.event()

    def run(self, ns: int, act: str) -> simpy.Event:
        """Start an activity of ns CPU work; the returned event fires when it ends."""
        self.act = act
        self.rem = int(ns)
        self.pending = True
        self.done = self.env.event()
        if self.state == RUNNING:
            assert self.cpu is not None
            self.cpu.replan()
        elif self.state == SLEEP:
            self.host.make_runnable(self)
        return self.done

    def sleep(self) -> simpy.Event:
        """Give up the pCPU until someone calls wake(); the returned event fires after that activity."""
        self.act = NONE
        self.pending = False
        self.done = self.env.event()
        if self.state == RUNNING:
            assert self.cpu is not None
            self.cpu.stop(SLEEP)
            self.cpu.pick()
        else:
            self.state = SLEEP
        return self.done

    def wake(self, act: str) -> None:
        """Make a sleeping thread runnable with an empty activity (it then decides what to do)."""
        self.act = act
        self.rem = 0
        self.pending = True
        self.host.make_runnable(self)


class PCpu:
    """One physical CPU: EEVDF for fair threads under a FIFO class, an idle governor, a timer process."""

    def __init__(self, host: Host, idx: int) -> None:
        self.host = host
        self.env = host.env
        self.idx = idx
        self.cur: Thread | None = None
        self.last: Thread | None = None
        self.seg_start = 0
        self.ovh_idle = 0  # C-state exit still to pass before the current thread runs
        self.ovh_busy = 0  # switch / entry / poll-exit overhead still to burn (CPU time, no progress)
        self.slice_end = 0
        self.seg_end = NEVER
        self.idle = True
        self.idle_since = 0
        self.idle_avg = 1e6  # the governor's running average of idle durations
        self.exit_lat = 0
        self.rt_used = 0
        self.rt_throttled = False
        self.kick = self.env.event()
        self.env.process(self.clock())

    # -- the pCPU's process: wait for the end of the current segment, or a new plan ------------
    def clock(self) -> Generator[simpy.Event, object, None]:
        while True:
            self.kick = self.env.event()
            if self.seg_end >= NEVER:
                yield self.kick
            else:
                yield self.kick | self.env.timeout(self.seg_end - self.env.now)
            if not self.kick.triggered:
                self.segment_ended()

    def replan(self) -> None:
        """When does the current segment end: work done, slice over (others waiting), or budget out."""
        e = self.cur
        now = self.env.now
        if e is None or not e.pending:
            self.seg_end = NEVER
        else:
            end = self.seg_start + self.ovh_idle + self.ovh_busy + max(e.rem, 0)
            if not e.fifo:
                if self.others_runnable(e):
                    end = min(end, max(self.slice_end, now))
            else:
                rt_left = int(self.host.prof.rt_runtime_ns) - self.rt_used
                end = min(end, self.seg_start + self.ovh_idle + max(rt_left, 0))
            budget = self.host.budget_left(e)
            if budget < NEVER:
                end = min(end, self.seg_start + self.ovh_idle + max(budget, 0))
            self.seg_end = max(end, now)
        if not self.kick.triggered:
            self.kick.succeed()

    # -- bookkeeping -------------------------------------------------------------------------
    def queued(self) -> list[Thread]:
        return [t for t in self.host.threads if t.state == RUNNABLE and t.cpu is self]

    def others_runnable(self, e: Thread) -> bool:
        return any(t is not e for t in self.queued())

    def avg_vruntime(self) -> float:
        """EEVDF's V: weighted average vruntime of the fair threads queued or running here."""
        num = den = 0.0
        for t in self.host.threads:
            if t.cpu is self and t.state in (RUNNABLE, RUNNING) and not t.fifo:
                num += t.weight * t.vruntime
                den += t.weight
        return num / den if den > 0 else -1.0

    def charge(self) -> None:
        """Account the time the current thread ran since its segment started."""
        e = self.cur
        if e is None:
            return
        now = self.env.now
        elapsed = now - self.seg_start
        if elapsed <= 0:
            return
        idle_part = min(elapsed, self.ovh_idle)
        cpu_t = elapsed - idle_part
        busy_part = min(cpu_t, self.ovh_busy)
        self.ovh_idle -= idle_part
        self.ovh_busy -= busy_part
        self.seg_start = now
        if e.pending:
            e.rem -= cpu_t - busy_part
        if e.fifo:
            self.rt_used += cpu_t
        else:
            e.vruntime += cpu_t * 1024.0 / e.weight
        for b in e.buckets:
            b.used_ns += cpu_t

    # -- scheduling ----------------------------------------------------------------------------
    def stop(self, new_state: str) -> Thread:
        self.charge()
        e = self.cur
        assert e is not None
        if new_state != RUNNABLE and not e.fifo:
            # EEVDF keeps a sleeper's lag (PLACE_LAG), clamped to two slices of service
            tick = 1e9 / self.host.prof.host_tick_hz
            limit = max(2.0 * self.host.cfg.slice_ns, tick) * 1024.0 / e.weight
            e.lag = min(limit, max(-limit, self.avg_vruntime() - e.vruntime))
        e.state = new_state
        if new_state == RUNNABLE:
            e.runnable_since = self.env.now
        self.cur = None
        return e

    def pick(self) -> None:
        """FIFO threads first (unless RT-throttled), then the eligible fair thread with the earliest
        virtual deadline; nothing runnable -> idle."""
        queued = self.queued()
        best: Thread | None = None
        if not self.rt_throttled:
            fifo = [t for t in queued if t.fifo]
            if fifo:
                best = min(fifo, key=lambda t: t.runnable_since)
        if best is None:
            best = self.pick_eevdf(None)
        if best is None:
            self.go_idle()
        else:
            self.dispatch(best)

    def tick_after(self, t: float) -> int:
        """A served slice is noticed at the next host tick (entity_tick -> update_curr; HRTICK is off by
        default), ticks on a 1 / CONFIG_HZ grid from time 0."""
        tick = 1e9 / self.host.prof.host_tick_hz
        return int(math.ceil(t / tick) * tick)

    def eligible(self, t: Thread, v: float) -> bool:
        """entity_eligible: t has not received more than its share, vruntime <= V (relative tolerance)."""
        return t.vruntime <= v + 1e-9 * max(1.0, abs(v))

    def pick_eevdf(self, cur: Thread | None) -> Thread | None:
        """pick_eevdf with cur (None: nothing) running: cur if eligible and still on its picked slice
        (RUN_TO_PARITY); else the eligible queued or current thread with the earliest virtual deadline."""
        fair = [t for t in self.queued() if not t.fifo]
        if cur is not None:
            fair.append(cur)
        if not fair:
            return None
        if len(fair) == 1:
            return fair[0]
        v = self.avg_vruntime()
        if cur is not None and self.eligible(cur, v) and cur.deadline == cur.pick_deadline:
            return cur
        eligible = [t for t in fair if self.eligible(t, v)]
        if not eligible:  # cannot happen exactly: someone is at or before the average
            return cur if cur is not None else min(fair, key=lambda t: t.vruntime)
        # the current entity is checked first in the kernel and wins ties
        return min(eligible, key=lambda t: (t.deadline, t is not cur))

    def go_idle(self) -> None:
        """Nothing runnable here: pull the longest-waiting thread allowed here from a busy pCPU
        (newidle balancing); else the idle governor picks the deepest allowed C-state whose
        residency fits the predicted idle time (running average of past idle periods, cut at the
        next guest timer tick)."""
        prof = self.host.prof
        now = self.env.now
        self.cur = None
        waiting = [t for t in self.host.threads
                   if t.state == RUNNABLE and t.cpu is not self and self.idx in t.mask]
        if waiting:
            e = min(waiting, key=lambda t: t.runnable_since)
            e.cpu = self
            if not e.fifo:
                v = self.avg_vruntime()
                if v >= 0:
                    e.vruntime = v
            self.exit_lat = 0
            self.idle_since = now
            self.dispatch(e)
            return
        self.idle = True
        self.idle_since = now
        predicted = self.idle_avg
        to_tick = self.host.next_tick - now
        if 0 < to_tick < predicted:
            predicted = to_tick
        deepest = self.host.cfg.deepest_cstate
        lat = prof.c1_exit_ns
        if deepest >= 1 and predicted >= prof.c1e_residency_ns:
            lat = prof.c1e_exit_ns
        if deepest >= 2 and predicted >= prof.c6_residency_ns:
            lat = prof.c6_exit_ns
        self.exit_lat = int(lat)
        self.replan()

    def dispatch(self, e: Thread) -> None:
        prof = self.host.prof
        now = self.env.now
        self.ovh_idle = 0
        if self.idle:
            self.idle_avg = 0.75 * self.idle_avg + 0.25 * (now - self.idle_since)
            self.ovh_idle = self.exit_lat
            self.idle = False
        self.ovh_busy = 0
        if self.last is not e:
            self.ovh_busy += int(prof.ctx_switch_ns)
            if e.kind == "vcpu" and self.last is not None:
                self.ovh_busy += int(prof.cache_refill_ns)  # cold caches after someone else ran here
        if e.needs_entry:  # VM entry + KVM's wake path of a blocked vCPU (kick IPI, vcpu_load)
            self.ovh_busy += self.host.entry_ns + int(prof.vcpu_wake_ns)
            e.needs_entry = False
        self.cur = self.last = e
        self.seg_start = now
        e.state = RUNNING
        e.cpu = self
        if not e.fifo:
            if e.vruntime >= e.deadline:
                e.deadline = e.vruntime + self.host.cfg.slice_ns * 1024.0 / e.weight
            e.pick_deadline = e.deadline
            self.slice_end = self.tick_after(now + self.ovh_idle + (e.deadline - e.vruntime) * e.weight / 1024.0)
        self.replan()

    def enqueue(self, e: Thread, wakeup: bool = True) -> None:
        """e wakes up here: zero-lag placement, then preempt, stop a halt-poll, or wait for the slice."""
        now = self.env.now
        cfg = self.host.cfg
        cur = self.cur
        resched = False
        if cur is not None and not cur.fifo:
            # enqueue_entity's update_curr: charge the current thread; a served request gets a new
            # slice (update_deadline), which reschedules when others wait and ends RUN_TO_PARITY
            self.charge()
            if cur.vruntime >= cur.deadline:
                cur.deadline = cur.vruntime + cfg.slice_ns * 1024.0 / cur.weight
                self.slice_end = self.tick_after(now + cfg.slice_ns)
                if self.others_runnable(cur) and cur.act != HPOLL:
                    self.stop(RUNNABLE)
                    cur = None
                    resched = True
        e.cpu = self
        if not e.fifo:
            num = load = 0.0
            for t in self.host.threads:
                if t is not e and t.cpu is self and t.state in (RUNNABLE, RUNNING) and not t.fifo:
                    num += t.weight * t.vruntime
                    load += t.weight
            if load > 0:  # place_entity, PLACE_LAG: the lag survives e's own weight in V
                e.vruntime = num / load - e.lag * (load + e.weight) / load
            e.deadline = e.vruntime + cfg.slice_ns * 1024.0 / e.weight
        e.lag = 0.0
        e.state = RUNNABLE
        e.runnable_since = now
        if cur is None:
            if resched:
                self.pick()  # e competes with those already waiting
            else:
                self.dispatch(e)
        elif cur.act == HPOLL:
            # KVM stops halt-polling as soon as another task is runnable on this pCPU
            self.stop(SLEEP)
            cur.act = NONE
            cur.pending = False
            self.pick()
        elif e.fifo and not cur.fifo and not self.rt_throttled:
            self.stop(RUNNABLE)
            self.dispatch(e)
        elif not cur.fifo:
            if wakeup and not e.fifo and self.pick_eevdf(cur) is e:  # check_preempt_wakeup_fair
                self.stop(RUNNABLE)
                self.pick()
            else:
                self.replan()

    def segment_ended(self) -> None:
        e = self.cur
        assert e is not None
        now = self.env.now
        cfg = self.host.cfg
        self.charge()
        if self.host.budget_left(e) <= 0:  # out of quota: throttled until the next period
            self.stop(THROTTLED)
            self.pick()
            return
        if e.fifo and self.rt_used >= int(self.host.prof.rt_runtime_ns):
            self.rt_throttled = True
            self.stop(RUNNABLE)
            self.pick()
            return
        if e.rem > 0 or self.ovh_idle + self.ovh_busy > 0:  # the slice ended first
            if not e.fifo and self.others_runnable(e):
                if e.vruntime >= e.deadline:
                    e.deadline = e.vruntime + cfg.slice_ns * 1024.0 / e.weight
                self.stop(RUNNABLE)
                self.pick()
                if e.state == RUNNABLE:
                    target = self.host.wake_target(e)
                    if target is not self and target.cur is None:
                        # an idle pCPU pulls the preempted thread (idle/nohz balancing)
                        e.state = SLEEP
                        e.lag = 0.0
                        target.enqueue(e)
            else:
                if not e.fifo:
                    e.deadline = e.vruntime + cfg.slice_ns * 1024.0 / e.weight
                    self.slice_end = self.tick_after(now + cfg.slice_ns)
                self.replan()
            return
        e.pending = False
        self.seg_end = NEVER
        e.done.succeed()  # the thread's process decides what comes next, at this same instant


class VCpu(Thread):
    """A vCPU thread: the guest's idle loop / request loop as a process."""

    def __init__(self, host: Host, idx: int, mask: list[int], buckets: list[Bucket]) -> None:
        super().__init__(host, "vcpu", mask, buckets, fifo=host.cfg.fifo)
        self.idx = idx
        self.weight = host.cfg.shares
        self.ticks = 0  # timer ticks waiting to be handled
        self.after_request = False
        self.halt_t = 0
        self.idle_t = 0
        self.host_poll_window = 0
        self.guest_poll_window = int(host.prof.guest_poll_grow_start)

    def body(self) -> Generator[simpy.Event, object, None]:
        h = self.host
        cfg = h.cfg
        yield self.done  # starts halted
        while True:
            if self.ticks > 0:
                self.ticks -= 1
                yield self.run(int(h.prof.tick_ns), TICK)
            elif h.guest_queue:
                r = h.guest_queue.popleft()
                self.after_request = True
                yield self.run(h.guest_work(r), WORK)
                if cfg.backend in ("userspace", "vhost"):
                    yield self.run(h.exit_ns, KICK)  # transmit kick: an ioeventfd exit
                h.backend_push(-r - 1)
            elif self.after_request and cfg.busy_poll_ns > 0:
                self.after_request = False
                yield self.run(cfg.busy_poll_ns, BPOLL)
            else:
                self.after_request = False
                yield from self.idle()

    def idle(self) -> Generator[simpy.Event, object, None]:
        h = self.host
        now = self.env.now
        if self.act != GPOLL:
            self.idle_t = now
            if h.cfg.guest_haltpoll and self.guest_poll_window > 0:
                yield self.run(self.guest_poll_window, GPOLL)
                return
        # HLT: exit to KVM, which polls for a while (if allowed) before blocking the thread
        self.halt_t = now
        if h.host_polling and self.host_poll_window > 0 and not self.cpu.others_runnable(self):
            yield self.run(self.host_poll_window, HPOLL)
            if self.act != HPOLL:
                return  # woken while polling (or after the poll was cut by another runnable task)
        yield self.sleep()

    def update_host_window(self) -> None:
        h = self.host
        if not h.host_polling:
            self.host_poll_window = 0
        elif not h.prof.halt_poll_adaptive:
            self.host_poll_window = h.cfg.halt_poll_ns
        else:
            p = h.prof
            self.host_poll_window = kvm_poll_window(self.host_poll_window, self.env.now - self.halt_t,
                                                    h.cfg.halt_poll_ns, p.halt_poll_grow,
                                                    p.halt_poll_grow_start, p.halt_poll_shrink)

    def update_guest_window(self) -> None:
        h = self.host
        if h.cfg.guest_haltpoll:
            p = h.prof
            self.guest_poll_window = kvm_poll_window(self.guest_poll_window, self.env.now - self.idle_t,
                                                     int(p.guest_poll_max_ns), p.guest_poll_grow,
                                                     p.guest_poll_grow_start, p.guest_poll_shrink)

    def interrupt(self, tick: bool) -> None:
        """An interrupt for this vCPU: ends a poll, wakes it from halt, or (tick) lengthens its work."""
        h = self.host
        if tick:
            self.ticks += 1
        if self.state == RUNNING and self.act in POLLS:
            cpu = self.cpu
            cpu.charge()
            if self.act == HPOLL:
                self.update_host_window()
                cpu.ovh_busy += int(h.prof.halt_poll_detect_ns) + h.entry_ns
            else:
                if self.act == GPOLL:
                    self.update_guest_window()
                cpu.ovh_busy += int(h.prof.guest_poll_detect_ns)
            self.act = RESUME
            self.rem = 0
            cpu.replan()
        elif self.state == SLEEP:
            self.update_host_window()
            self.update_guest_window()
            self.needs_entry = True
            self.wake(RESUME)
        elif tick and self.state == RUNNING and self.act == WORK:
            self.ticks -= 1
            self.cpu.charge()
            self.rem += int(h.prof.tick_ns)
            self.cpu.replan()


class Backend(Thread):
    """The QEMU I/O thread or vhost-net worker: moves packets between the NIC/tap and the virtqueues."""

    def __init__(self, host: Host, mask: list[int], buckets: list[Bucket]) -> None:
        super().__init__(host, "backend", mask, buckets)
        self.weight = host.cfg.shares
        self.queue: deque[int] = deque()  # request id (rx) or -(id + 1) (tx)

    def body(self) -> Generator[simpy.Event, object, None]:
        h = self.host
        p = h.prof
        user = h.cfg.backend == "userspace"
        while True:
            yield self.sleep()
            while self.queue:
                item = self.queue.popleft()
                if item >= 0:  # the host NIC irq + softirq that woke us, then the copy to the guest
                    yield self.run(int(p.nic_irq_ns + (p.userspace_rx_ns if user else p.vhost_rx_ns)), WORK)
                    h.guest_enqueue(item)
                else:
                    yield self.run(int(p.userspace_tx_ns if user else p.vhost_tx_ns), WORK)
                    h.complete(-item - 1)


class Neighbour(Thread):
    """A neighbour VM's thread: exponential CPU bursts separated by think times, for its demand."""

    def __init__(self, host: Host, mask: list[int], demand: float, burst_ns: float) -> None:
        super().__init__(host, "neighbour", mask, [])
        self.demand = demand
        self.burst_ns = burst_ns  # housekeeping work comes in short items, neighbour VMs in long bursts

    def body(self) -> Generator[simpy.Event, object, None]:
        h = self.host
        burst = self.burst_ns
        first = True
        while True:
            if self.demand <= 0:
                yield self.env.timeout(int(burst))
                continue
            off = 0.0 if self.demand >= 1 else h.rng.expovariate(self.demand / (burst * (1 - self.demand)))
            work = int(h.rng.expovariate(1.0 / burst)) + 1
            yield self.env.timeout(int(off) % int(burst) if first else int(off))
            first = False
            yield self.run(work, WORK)
            self.sleep()


class Host:
    """One latency VM on a shared host, with its neighbours, workload and measurement."""

    def __init__(self, env: simpy.Environment, cfg: Config, prof: HostProfile, seed: int) -> None:
        if prof.sched_gen != "eevdf":
            raise ScenarioError(f"host profile {prof.name!r}: the SimPy reference models EEVDF only, "
                                f"not sched_gen={prof.sched_gen!r}")
        self.env = env
        self.cfg = cfg
        self.prof = prof
        self.rng = random.Random(seed)
        ghz = prof.cpu_ghz
        self.exit_ns = int((prof.exit_hw_cycles + prof.exit_handler_cycles + prof.entry_hw_cycles) / ghz)
        self.entry_ns = int(prof.entry_hw_cycles / ghz)
        self.host_polling = prof.kvm > 0 and cfg.halt_poll_ns > 0 and not cfg.guest_haltpoll
        self.tick_period = int(1e9 / prof.tick_hz)

        npc = prof.n_pcpu
        hk = npc  # the housekeeping pCPU
        self.pcpus = [PCpu(self, i) for i in range(npc + 1)]
        vm = Bucket(cfg.global_quota_ns)
        self.vcpus = [VCpu(self, e, [e % npc] if cfg.dedicated else list(range(npc)),
                           [Bucket(cfg.vcpu_quota_ns), vm]) for e in range(cfg.n_vcpu)]
        vcpu_cpus = sorted({c for v in self.vcpus for c in v.mask})
        self.threads: list[Thread] = list(self.vcpus)
        self.backend: Backend | None = None
        if cfg.backend in ("userspace", "vhost"):
            mask = [hk] if cfg.emulator_on_housekeeping else vcpu_cpus
            self.backend = Backend(self, mask, [Bucket(cfg.emulator_quota_ns), vm])
            self.threads.append(self.backend)
        neigh_cpus = [c for c in range(npc) if c not in vcpu_cpus] if cfg.dedicated else list(range(npc))
        if not neigh_cpus:
            neigh_cpus = [hk]
        self.neighbours: list[Neighbour] = []
        for j in range(npc + 1):
            if j == hk:
                n = Neighbour(self, [hk], prof.housekeeping_load, prof.housekeeping_burst_ns)
            else:
                demand = cfg.neighbour_demand[j % len(cfg.neighbour_demand)]
                n = Neighbour(self, [j] if j in neigh_cpus else neigh_cpus, demand, prof.neighbour_burst_ns)
                if j in n.mask:
                    n.cpu = self.pcpus[j]
            self.neighbours.append(n)
        self.threads.extend(self.neighbours)
        self.vm_buckets = [b for t in self.threads for b in t.buckets]
        for v in self.vcpus:
            v.cpu = self.pcpus[v.idx % npc]

        self.guest_queue: deque[int] = deque()
        self.nic_pending: list[int] = []
        self.nic_armed = False
        self.pmd_free = 0
        self.rr = 0
        self.arrival_t: dict[int, int] = {}
        self.service: dict[int, int] = {}
        self.next_id = 0
        self.mmpp_high = False
        self.mmpp_switch = env.event()
        self.next_tick = int(self.rng.random() * self.tick_period)
        self.done_t: list[int] = []
        self.latency: list[int] = []
        self.dropped = 0

        for t in self.threads:
            if t.kind != "neighbour":
                env.process(t.body())  # type: ignore[attr-defined]
        for n in self.neighbours:
            env.process(n.body())
        env.process(self.arrivals())
        if cfg.mmpp_mult != 1.0:
            env.process(self.mmpp())
        env.process(self.ticks())
        env.process(self.periods())
        env.process(self.rt_periods())

    # -- workload ------------------------------------------------------------------------------
    def arrivals(self) -> Generator[simpy.Event, object, None]:
        while True:
            rate = self.cfg.rate_rps * (self.cfg.mmpp_mult if self.mmpp_high else 1.0)
            if rate <= 0:
                yield self.mmpp_switch
                continue
            gap = int(self.rng.expovariate(rate / 1e9)) + 1
            switch = self.mmpp_switch
            yield self.env.timeout(gap) | switch
            if not switch.triggered:  # an MMPP state change redraws the next arrival
                self.arrive()

    def mmpp(self) -> Generator[simpy.Event, object, None]:
        while True:
            mean = self.cfg.mmpp_on_ns if self.mmpp_high else self.cfg.mmpp_off_ns
            yield self.env.timeout(int(self.rng.expovariate(1.0 / mean)) + 1)
            self.mmpp_high = not self.mmpp_high
            switch, self.mmpp_switch = self.mmpp_switch, self.env.event()
            switch.succeed()

    def sample_service(self) -> int:
        cfg = self.cfg
        s = cfg.service_mean_ns
        if cfg.service_cv > 0:
            sig2 = math.log(1.0 + cfg.service_cv**2)
            s = self.rng.lognormvariate(math.log(s) - 0.5 * sig2, math.sqrt(sig2))
        if cfg.long_frac > 0 and self.rng.random() < cfg.long_frac:
            s *= cfg.long_mult
        return int(s)

    def arrive(self) -> None:
        if len(self.arrival_t) >= 16384 - 8:  # the engine's in-flight ring is full: drop
            self.dropped += 1
            return
        r = self.next_id
        self.next_id += 1
        self.arrival_t[r] = self.env.now
        self.service[r] = self.sample_service()
        self.nic_pending.append(r)
        if self.cfg.backend == "vhost_user_poll" or self.cfg.rx_coalesce_ns <= 0:
            self.nic_deliver()
        elif not self.nic_armed:
            self.nic_armed = True
            self.env.process(self.coalesce())

    def coalesce(self) -> Generator[simpy.Event, object, None]:
        yield self.env.timeout(self.cfg.rx_coalesce_ns)
        self.nic_armed = False
        self.nic_deliver()

    def nic_deliver(self) -> None:
        pending, self.nic_pending = self.nic_pending, []
        for r in pending:
            self.backend_push(r)

    # -- data path -------------------------------------------------------------------------------
    def backend_push(self, item: int) -> None:
        """A packet for the host data path: rx (request id) or tx (-(id + 1))."""
        p = self.prof
        now = self.env.now
        if self.cfg.backend == "vhost_user_poll":
            cost = p.pmd_rx_ns if item >= 0 else p.pmd_tx_ns
            self.pmd_free = max(self.pmd_free, now + int(p.guest_poll_detect_ns)) + int(cost)
            self.env.process(self.after(self.pmd_free - now, item))
        elif self.cfg.backend == "sriov":
            self.env.process(self.after(int(p.sriov_ns), item))
        else:
            assert self.backend is not None
            self.backend.queue.append(item)
            if self.backend.state == SLEEP:
                self.backend.wake(WORK)

    def after(self, delay: int, item: int) -> Generator[simpy.Event, object, None]:
        yield self.env.timeout(delay)
        if item >= 0:
            self.guest_enqueue(item)
        else:
            self.complete(-item - 1)

    def guest_enqueue(self, r: int) -> None:
        """The packet reaches the guest: a polling vCPU finds it, else wake a halted vCPU (round
        robin), else it waits in the guest queue for a vCPU that is busy or waiting for a pCPU."""
        self.guest_queue.append(r)
        for v in self.vcpus:
            if v.state == RUNNING and v.act in POLLS:
                v.interrupt(tick=False)
                return
        n = len(self.vcpus)
        self.rr = (self.rr + 1) % n
        for k in range(n):
            v = self.vcpus[(self.rr + k) % n]
            if v.state == SLEEP and v.act == NONE:
                v.interrupt(tick=False)
                return
        for v in self.vcpus:
            if v.state != RUNNING and v.act in (BPOLL, GPOLL):
                if v.act == GPOLL:
                    v.update_guest_window()
                v.act = RESUME  # a preempted poller sees the queue as soon as it runs again
                v.rem = 0
        if not self.prof.posted_interrupts:
            for v in self.vcpus:
                if v.state == RUNNING:  # IPI -> exit -> injection on a busy vCPU
                    v.cpu.charge()
                    v.cpu.ovh_busy += self.exit_ns
                    v.cpu.replan()
                    break

    def guest_work(self, r: int) -> int:
        """Guest rx + service (inflated by neighbours running now: LLC interference) + tx."""
        p = self.prof
        running = sum(1 for n in self.neighbours if n.state == RUNNING)
        busy = running / len(self.neighbours)
        svc = self.service.pop(r) * (1.0 + p.llc_interference * busy)
        return int((p.guest_rx_ns + p.guest_tx_ns) * p.guest_slowdown + svc)

    def complete(self, r: int) -> None:
        self.done_t.append(self.env.now)
        self.latency.append(self.env.now - self.arrival_t.pop(r) + self.cfg.client_rtt_ns)

    # -- host scheduling -------------------------------------------------------------------------
    def budget_left(self, e: Thread) -> int:
        left = NEVER
        for b in e.buckets:
            if b.quota_ns is not None:
                left = min(left, b.quota_ns - b.used_ns)
        return left

    def wake_target(self, e: Thread) -> PCpu:
        """Wake-up placement: the previous pCPU if idle, else an idle allowed one, else the previous."""
        prev = e.cpu
        if prev is not None and prev.idx in e.mask and prev.cur is None:
            return prev
        idle = next((self.pcpus[q] for q in e.mask if self.pcpus[q].cur is None), None)
        if idle is not None:
            return idle
        return prev if prev is not None and prev.idx in e.mask else self.pcpus[e.mask[0]]

    def make_runnable(self, e: Thread) -> None:
        self.wake_target(e).enqueue(e)

    def ticks(self) -> Generator[simpy.Event, object, None]:
        """The guest's periodic timer tick on every vCPU (they are what idle vCPUs wake up for)."""
        while True:
            yield self.env.timeout(self.next_tick - self.env.now)
            self.next_tick += self.tick_period
            for v in self.vcpus:
                v.interrupt(tick=True)

    def periods(self) -> Generator[simpy.Event, object, None]:
        """CFS bandwidth: quotas refill at each period boundary; throttled threads run again."""
        yield self.env.timeout(int(self.rng.random() * self.cfg.period_ns))
        while True:
            for b in self.vm_buckets:
                b.used_ns = 0
            for t in self.threads:
                if t.state == THROTTLED:
                    t.state = SLEEP
                    # unthrottle_cfs_rq reschedules only an idle CPU: no wake-up preemption check
                    self.wake_target(t).enqueue(t, wakeup=False)
            for c in self.pcpus:
                if c.cur is not None:
                    c.charge()
                    c.replan()
            yield self.env.timeout(self.cfg.period_ns)

    def rt_periods(self) -> Generator[simpy.Event, object, None]:
        """RT throttling: FIFO threads get rt_runtime per rt_period on each pCPU."""
        p = self.prof
        yield self.env.timeout(int(self.rng.random() * p.rt_period_ns))
        while True:
            for c in self.pcpus:
                c.rt_used = 0
                if c.rt_throttled:
                    c.rt_throttled = False
                    if any(t.fifo for t in c.queued()):
                        if c.cur is not None:
                            c.stop(RUNNABLE)
                        c.pick()
                    elif c.cur is None:
                        c.pick()
                elif c.cur is not None:
                    c.charge()
                    c.replan()
            yield self.env.timeout(int(p.rt_period_ns))


@dataclass
class RunResult:
    latencies_ns: list[np.ndarray]  # per window: latency of each request completed in it
    requests: int
    dropped: int


def run_reference(scenario: Scenario, phase: int, settings: Mapping[str, knobs.KnobValue] | None,
                  seed: int, n_windows: int, window_s: float = 0.25) -> RunResult:
    """Simulate n_windows control intervals of one scenario phase (held at its start) from a fresh host."""
    merged = scenario.settings_at_start()
    if settings:
        merged.update(knobs.validate_settings(settings))
    cfg = Config.of(merged, scenario, scenario.phases[phase], 0.0)
    env = simpy.Environment()
    host = Host(env, cfg, get_profile(scenario.host_profile), seed)
    window_ns = round(window_s * 1e9)
    env.run(until=n_windows * window_ns)
    done = np.asarray(host.done_t, dtype=np.int64)
    lat = np.asarray(host.latency, dtype=np.int64)
    win = done // window_ns
    return RunResult([lat[win == k] for k in range(n_windows)], len(lat), host.dropped)
