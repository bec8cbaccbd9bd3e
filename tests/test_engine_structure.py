"""The engine's structure: one writer per knob into cfg, and a SIM_HASH that changes with every file that
can change a simulated result."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np

import vvho_env
from vvho_env import knobs, sim_hash, sim_sources
from vvho_env.sim import engine as E
from vvho_env.sim.engine.layout import NCFG
from vvho_env.sim.profiles import XEON_KVM

ROOT = Path(vvho_env.__file__).parent


def test_every_knob_has_exactly_one_writer() -> None:
    declared = Counter(name for m in E.KNOB_MODULES for name in m.KNOB_WRITERS)
    assert sorted(declared) == sorted(knobs.KNOB_NAMES)
    assert all(n == 1 for n in declared.values()), {k: n for k, n in declared.items() if n != 1}


def test_each_knob_writes_its_own_cfg_slot_only() -> None:
    slots = [slot for slot, _ in E.KNOB_WRITERS.values()]
    assert len(set(slots)) == len(slots)
    defaults = knobs.defaults()
    for name, (slot, _) in E.KNOB_WRITERS.items():
        cfg = np.full(NCFG, np.nan)
        E.write_knobs(cfg, defaults, XEON_KVM)
        before = cfg.copy()
        other = next(v for v in map(knobs.get(name).from_unit, (-1.0, 1.0, 0.5)) if v != defaults[name])
        E.write_knobs(cfg, {**defaults, name: other}, XEON_KVM)
        changed = np.flatnonzero(~np.isclose(cfg, before, equal_nan=True))
        assert changed.tolist() == [slot], (name, changed)


def test_sim_hash_covers_the_sim_package_and_every_module_the_simulator_imports() -> None:
    covered = {p.relative_to(ROOT).as_posix() for p in sim_sources()}
    assert {p.relative_to(ROOT).as_posix() for p in ROOT.joinpath("sim").rglob("*.py")} <= covered
    assert {"knobs.py", "scenarios.py", "scenarios.yaml", "objective.py", "histogram.py", "sim/profiles.py"} <= covered
    code = ("import sys, vvho_env.sim.backend, vvho_env.objective; "
            "print('\\n'.join(m.__file__ for n, m in sys.modules.items() if n.startswith('vvho_env')))")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    imported = {Path(f).resolve().relative_to(ROOT.resolve()).as_posix() for f in out.split()}
    assert imported - {"__init__.py", "sim/__init__.py"} <= covered


def test_sim_hash_changes_when_any_covered_file_changes(tmp_path: Path) -> None:
    root = tmp_path / "vvho_env"
    for p in sim_sources():
        dest = root / p.relative_to(ROOT)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(p, dest)
    base = sim_hash(root)
    assert base == vvho_env.SIM_HASH
    for p in sim_sources(root):
        original = p.read_bytes()
        p.write_bytes(original + b"\n")
        assert sim_hash(root) != base, p.relative_to(root)
        p.write_bytes(original)
    assert sim_hash(root) == base
