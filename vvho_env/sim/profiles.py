"""Host profiles: every physical constant of the simulator, each with its source or stated reason.

A profile is turned into a float64 runtime array (``to_array``) so that it can be randomised per
episode (domain randomisation) and fitted to a real host later without recompiling the simulator.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import numpy as np

from vvho_env.knobs import KNOB_NAMES

# Knobs the libvirt backend really sets on the TCG testbed of this machine (see vvho_env/live;
# tests/live checks the two lists agree). halt_poll_ns needs KVM; busy_poll_us is set inside the
# guest through the test service's control channel; the host-NIC, C-state and scheduler-wide knobs
# have no equivalent on this machine; restart-cost knobs are fixed by the test domain's definition.
TESTBED_SETTABLE = frozenset(
    {
        "vcpu_pinning",
        "vcpu_quota",
        "vcpu_period",
        "emulator_quota",
        "global_quota",
        "cpu_shares",
        "emulator_placement",
        "vcpu_sched_policy",
        "busy_poll_us",
    }
)


SCHED_GENS = ("eevdf", "cfs")
# kernel defaults held in a profile that domain randomisation must not scale
KERNEL_TUNABLES = frozenset({"rt_runtime_ns", "rt_period_ns", "cfs_latency_ns", "cfs_wakeup_granularity_ns"})


@dataclass(frozen=True)
class HostProfile:
    """Physical constants of one host. Times in ns unless the name says otherwise."""

    name: str
    description: str
    # -- topology ------------------------------------------------------------------------------
    # pCPUs shared by the latency VM and its neighbours (a slice of a server; the housekeeping pCPU
    # and a PMD core, when used, come on top).
    n_pcpu: int = 4
    cpu_ghz: float = 2.4  # a 2.4 GHz Xeon, the class of the published testbeds
    # -- VM exit / entry (SplitX, Landau et al.: exit+entry ~2,000-2,500 cycles on Nehalem-Sandy
    # Bridge; only the sum is published, the split between transition and handler is assumed) ----
    exit_hw_cycles: float = 1000.0  # hardware VM-exit transition (state save to the VMCS)
    exit_handler_cycles: float = 300.0  # minimal KVM exit handler (vmcs reads, dispatch)
    entry_hw_cycles: float = 950.0  # hardware VM-entry transition (state load, checks)
    # -- host scheduler ------------------------------------------------------------------------
    # wake-up + context switch of a thread on an idle or busy core: 1-2 us on Linux
    # (lmbench lat_ctx; Tsuna, "How long does it take to make a context switch?", 2010).
    ctx_switch_ns: float = 1500.0
    # Scheduler generation of the fair class: "eevdf" (Linux 6.6+: wake-up preemption when the wakee
    # becomes the earliest eligible deadline, RUN_TO_PARITY protecting only an eligible current) or "cfs"
    # (before 6.6: a wakee preempts when its vruntime is behind by more than the wakeup granularity).
    # kernel/sched/fair.c: check_preempt_wakeup_fair / pick_eevdf (6.6) and check_preempt_wakeup /
    # wakeup_preempt_entity (5.x); the sched_slice_us knob is sysctl_sched_base_slice under EEVDF and
    # sysctl_sched_min_granularity (its name before 6.6, commit e4ec3318a17f) under CFS.
    sched_gen: str = "eevdf"
    # CFS tunables (kernel/sched/fair.c before 6.6), scaled by 1 + ilog2(min(ncpus, 8)) = 4 on a server
    # (SCHED_TUNABLESCALING_LOG): sysctl_sched_latency 6 ms x 4, sysctl_sched_wakeup_granularity 1 ms x 4.
    # Kernel defaults, not physical costs: domain randomisation leaves them alone.
    cfs_latency_ns: float = 24e6
    cfs_wakeup_granularity_ns: float = 4e6
    # the host's CONFIG_HZ (RHEL 8/9 kernels: CONFIG_HZ_1000); TICK_NSEC bounds EEVDF's saved lag from
    # below (update_entity_lag: limit = max(2 * slice, TICK_NSEC) / weight)
    host_tick_hz: float = 1000.0
    # cost of the vCPU thread blocking in kvm_vcpu_halt (schedule() out); same order as a switch.
    block_ns: float = 1000.0
    # KVM's side of waking a blocked vCPU beyond a plain switch: kvm_vcpu_kick (IPI to the target
    # pCPU), try_to_wake_up, vcpu_load (VMCS load). Fitted to the halt-polling commit: polling saved
    # 7 us per TCP_RR transaction (34 -> 27 us), i.e. C1 exit + switch + this - one poll iteration.
    vcpu_wake_ns: float = 3800.0
    # -- idle states (intel_idle.c, Skylake-SP table: exit latency / target residency) -----------
    c1_exit_ns: float = 2000.0
    c1_residency_ns: float = 2000.0
    c1e_exit_ns: float = 10000.0
    c1e_residency_ns: float = 20000.0
    c6_exit_ns: float = 133000.0
    c6_residency_ns: float = 600000.0
    # -- halt polling (Documentation/virt/kvm/halt-polling.rst) --------------------------------
    kvm: float = 1.0  # 1 when KVM runs the guest (host halt-polling exists), 0 under TCG
    halt_poll_grow: float = 2.0  # halt_poll_ns_grow
    halt_poll_grow_start: float = 10000.0  # halt_poll_ns_grow_start
    halt_poll_shrink: float = 0.0  # halt_poll_ns_shrink (0 = reset to 0)
    halt_poll_adaptive: float = 1.0  # 0 = fixed window (the behaviour before dynamic halt-polling)
    halt_poll_detect_ns: float = 300.0  # one iteration of the poll loop (kvm_vcpu_check_block)
    # guest haltpoll (Documentation/virt/guest-halt-polling.rst defaults)
    guest_poll_max_ns: float = 200000.0  # guest_halt_poll_ns
    guest_poll_grow: float = 2.0  # guest_halt_poll_grow
    guest_poll_grow_start: float = 50000.0  # guest_halt_poll_grow_start
    guest_poll_shrink: float = 2.0  # guest_halt_poll_shrink
    guest_poll_detect_ns: float = 200.0  # a poll iteration in the guest idle loop / napi busy loop
    # -- network path ----------------------------------------------------------------------------
    # Host NIC interrupt + softirq per interrupt (~1 us on a 10 GbE NIC); on the latency path of
    # the userspace/vhost backends (the backend thread is woken from the softirq), and CPU cost.
    nic_irq_ns: float = 1000.0
    # vhost-net handle_rx per packet: recvmsg from the tap socket, copy into the virtqueue, irqfd
    # signal; 2-4 us per small packet in vhost-net profiles (Tsirkin, KVM Forum 2012 "vhost-net").
    vhost_rx_ns: float = 3000.0
    vhost_tx_ns: float = 1000.0  # vhost-net worker per transmitted packet
    # QEMU userspace virtio-net: tap read/write + virtqueue in the QEMU I/O thread under the big QEMU
    # lock. vhost-net was introduced because this path's per-packet latency is several times vhost's
    # (Tsirkin, vhost-net announcement, 2009-2010); assumed 5x vhost per packet, not fitted to a figure.
    userspace_rx_ns: float = 15000.0
    userspace_tx_ns: float = 10000.0
    # vhost-user with a polling PMD (DPDK virtio-user): no wake-ups, sub-us per packet
    # (DPDK vhost PMD performance reports, ~10 Mpps per core => ~100 ns/pkt; 400/300 with copies).
    pmd_rx_ns: float = 400.0
    pmd_tx_ns: float = 300.0
    # SR-IOV VF: DMA straight into guest memory + posted interrupt, no host thread. The paper's
    # passthrough + dedicated core result (20 us vs 18 native) bounds it to ~1-2 us.
    sriov_ns: float = 800.0
    posted_interrupts: float = 1.0  # APICv: interrupts reach a running vCPU without an exit
    guest_rx_ns: float = 2000.0  # guest virtio-net irq + stack per request (native stack cost)
    guest_tx_ns: float = 1000.0  # guest transmit path per response
    # -- guest timer tick -------------------------------------------------------------------------
    tick_hz: float = 250.0  # CONFIG_HZ=250, the idle guest of the halt-polling commit
    # Work done per tick by an idle guest (tick handler, RCU, timer reprogramming exits). Fitted so
    # that an idle guest spends 1.1% of vCPU time in C0 without polling, as the halt-polling
    # commit measured (commit aca6ff29); no other figure constrains it.
    tick_ns: float = 40000.0
    # -- interference ------------------------------------------------------------------------------
    # Cold L1/L2 after another thread ran on the core: a few us for a working set of a few 100 KB
    # (Li, Ding, Shen, "Quantifying the cost of context switch", ExpCS 2007).
    cache_refill_ns: float = 3000.0
    # Service-time inflation at full neighbour load from shared LLC/memory bandwidth: 10-30% in
    # co-location studies (Mars et al., Bubble-Up, MICRO 2011; Lo et al., Heracles, ISCA 2015).
    llc_interference: float = 0.15
    # -- guest spinlocks and pause-loop exiting --------------------------------------------------
    # Critical section of the guest kernel lock a lock-taking request holds (part of its work). Assumed,
    # not fitted: kernel spinlock sections are short (of the order of a microsecond); what matters under
    # overcommit is that a holder preempted inside one keeps the lock for a host time slice.
    lock_hold_ns: float = 2000.0
    ple_yield_ns: float = 1500.0  # kvm_vcpu_on_spin: candidate scan + yield_to, on top of the exit
    # PLE window adaptation, KVM's kvm_intel module parameters (arch/x86/kvm/x86.h KVM_DEFAULT_PLE_WINDOW_GROW
    # 2, KVM_DEFAULT_PLE_WINDOW_SHRINK 0 = reset to ple_window, KVM_VMX_DEFAULT_PLE_WINDOW_MAX UINT_MAX cycles)
    ple_grow: float = 2.0
    ple_shrink: float = 0.0
    ple_window_max: float = 4294967295.0
    # One iteration of a spin-wait loop (cpu_relax = PAUSE + a load): PAUSE takes ~140 cycles on Skylake
    # and later, ~10 before (Intel 64 and IA-32 Optimization Reference Manual, "Pause latency in Skylake
    # microarchitecture"); this profile is a Skylake-SP class Xeon.
    pause_loop_cycles: float = 140.0
    # Paravirtual spinlocks (kernel/locking/qspinlock_paravirt.h): a waiter spins SPIN_THRESHOLD loops
    # (arch/x86/include/asm/qspinlock.h, 1 << 15) before it halts in kvm_wait and waits for the
    # unlocker's KVM_HC_KICK_CPU (~1.9 ms of spinning at 140 cycles a loop and 2.4 GHz).
    pv_spin_loops: float = 32768.0
    # -- RT throttling (Documentation/scheduler/sched-rt-group.rst defaults) --------------------
    rt_runtime_ns: float = 950e6
    rt_period_ns: float = 1000e6
    # -- misc ----------------------------------------------------------------------------------------
    housekeeping_load: float = 0.05  # background load of the housekeeping pCPU (irqs, kthreads)
    # housekeeping work comes in short items (kworker/ksoftirqd run tens of us per item), not in
    # the millisecond bursts of a CPU-bound neighbour VM
    housekeeping_burst_ns: float = 50000.0
    neighbour_burst_ns: float = 2e6  # CPU burst of a neighbour's runnable period (CPU-bound VMs)
    restart_outage_ns: float = 2e9  # a restart-cost knob changed mid-episode: guest reboot, ~2 s
    guest_slowdown: float = 1.0  # multiplier on guest CPU work (TCG emulation >> 1)
    settable: frozenset[str] = frozenset(KNOB_NAMES)  # what a backend can set on this host
    host_wide: frozenset[str] = frozenset(
        {"halt_poll_ns", "sched_slice_us", "ple_window", "idle_state", "rx_usecs"}
    )

    def __post_init__(self) -> None:
        if self.sched_gen not in SCHED_GENS:
            raise ValueError(f"host profile {self.name!r}: sched_gen={self.sched_gen!r} not accepted; "
                             f"accepted: {', '.join(SCHED_GENS)}")

    @property
    def sched_cfs(self) -> float:
        """1.0 when the fair class is pre-6.6 CFS, 0.0 under EEVDF (the runtime array's encoding)."""
        return 1.0 if self.sched_gen == "cfs" else 0.0

    def to_array(self) -> np.ndarray:
        return np.array([float(getattr(self, f)) for f in PROFILE_FIELDS], dtype=np.float64)

    def exit_roundtrip_ns(self) -> float:
        return (self.exit_hw_cycles + self.exit_handler_cycles + self.entry_hw_cycles) / self.cpu_ghz

    def randomised(self, rng: np.random.Generator, spread: float) -> HostProfile:
        """A copy with every cost scaled by an independent factor in [1 - spread, 1 + spread]."""
        changes = {}
        for f in PROFILE_FIELDS:
            if f.endswith(("_ns", "_cycles")) and f not in KERNEL_TUNABLES:
                changes[f] = getattr(self, f) * float(rng.uniform(1 - spread, 1 + spread))
        return replace(self, **changes)


# the runtime array: every numeric field, then the scheduler generation as a number
PROFILE_FIELDS: tuple[str, ...] = (
    *(f.name for f in fields(HostProfile) if f.name not in ("name", "description", "settable", "host_wide",
                                                            "sched_gen")),
    "sched_cfs",
)
P = {name: i for i, name in enumerate(PROFILE_FIELDS)}  # field -> index in the runtime array


XEON_KVM = HostProfile(
    name="xeon-kvm",
    description="2.4 GHz Xeon server slice (4 shared pCPUs + housekeeping) running KVM with APICv",
)

# The TCG testbed of this machine: QEMU without KVM, 2 cores. TCG translates guest code (5-20x
# slower than native for kernel-heavy code, QEMU docs / measured here), every device access is a
# trip through QEMU's main loop under the BQL, and user-mode networking (slirp) copies packets in
# the QEMU process. Figures seen here: echo RTT p50 0.2-0.5 ms, p99 ~5 ms.
TCG_TESTBED = HostProfile(
    name="tcg-testbed",
    description="this machine: QEMU TCG (no KVM), 2 pCPUs, slirp networking, libvirt-managed",
    n_pcpu=2,
    cpu_ghz=2.4,
    exit_hw_cycles=24000.0,  # a TCG I/O exit: leave translated code, take the BQL (~10 us)
    exit_handler_cycles=12000.0,
    entry_hw_cycles=12000.0,
    kvm=0.0,  # no KVM: no host halt polling; an idle TCG vCPU sleeps in a condition variable
    userspace_rx_ns=60000.0,  # slirp + virtio-net emulation in the QEMU main loop
    userspace_tx_ns=40000.0,
    vhost_rx_ns=60000.0,  # no vhost-net with slirp: the same userspace path
    vhost_tx_ns=40000.0,
    guest_rx_ns=40000.0,  # guest network stack under TCG (~20x native)
    guest_tx_ns=20000.0,
    tick_ns=400000.0,  # tick work under TCG (~10x the KVM guest's)
    guest_slowdown=20.0,
    settable=TESTBED_SETTABLE,
    host_wide=frozenset(),
)

# The same server on a kernel before 6.6 (RHEL 9's 5.14, Ubuntu 22.04's 5.15): the CFS fair class.
XEON_KVM_CFS = replace(
    XEON_KVM,
    name="xeon-kvm-cfs",
    description="the xeon-kvm server on a pre-6.6 kernel: CFS with wakeup granularity instead of EEVDF",
    sched_gen="cfs",
)

PROFILES: dict[str, HostProfile] = {p.name: p for p in (XEON_KVM, XEON_KVM_CFS, TCG_TESTBED)}


def get_profile(name: str) -> HostProfile:
    try:
        return PROFILES[name]
    except KeyError:
        raise KeyError(f"unknown host profile {name!r}; known profiles: {', '.join(PROFILES)}") from None
