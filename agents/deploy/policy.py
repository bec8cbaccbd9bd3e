"""A policy bundle as the host agent runs it: the observation built exactly as the env builds it in
training, the bundle's normalisation and ONNX graph, and the action turned into knob settings.

The env's own Codec does the building and decoding (window features of the last `history` windows,
oldest first, padded with zeros, then the previous action; absolute or delta actions on the knobs'
[-1, 1] scales), so a deployed policy sees what it saw in training. The bundle is refused at start,
with one line saying why, when its graph's sha256 does not match, when its observation layout is not
this code's, or when it acts on knobs this host cannot set.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from agents.bundle import BundleError, PolicyBundle
from vvho_env.env import FEATURES, Codec
from vvho_env.scenarios import Scenario, load_scenario
from vvho_env.types import Capabilities, Settings, Telemetry


class DeployedPolicy:
    def __init__(self, path: Path, caps: Capabilities, unavailable: Mapping[str, str] | None = None) -> None:
        self.bundle = PolicyBundle(path)
        m = self.bundle.manifest
        where = self.bundle.path
        if list(m.get("features", [])) != list(FEATURES):
            raise BundleError(f"{where}: the bundle's observation features {m.get('features')} are not this "
                              f"version's {list(FEATURES)}; re-export it with this version")
        self.knob_names = self.bundle.knob_names
        missing = [k for k in self.knob_names if k not in caps.settable]
        if missing:
            why = "; ".join(f"{k}: {(unavailable or {}).get(k, 'not settable')}" for k in missing)
            raise BundleError(f"{where}: the bundle acts on {list(self.knob_names)} but this host cannot set "
                              f"{', '.join(missing)} ({why}); settable here: {', '.join(sorted(caps.settable))}")
        try:
            self.scenario: Scenario = load_scenario(m["scenario"])
        except Exception as exc:
            raise BundleError(f"{where}: manifest scenario {m.get('scenario')!r} is not known here: {exc}") from None
        self.codec = Codec.for_scenario(self.scenario, self.knob_names, m["action_mode"],
                                        float(m.get("delta_step", 0.25)), int(m["history"]))
        if self.codec.obs_size != self.bundle.obs_size:
            raise BundleError(f"{where}: obs_size {self.bundle.obs_size} does not match {m['history']} windows x "
                              f"{len(FEATURES)} features + {len(self.knob_names)} knobs = {self.codec.obs_size}")
        self.sha256 = str(m["graph_sha256"])
        self._obs = np.zeros(self.codec.obs_size, dtype=np.float32)
        self.position = np.zeros(len(self.knob_names), dtype=np.float32)

    def start(self, settings: Settings) -> None:
        """A new run from the host's current settings (the previous action of the first observation)."""
        self.position = self.codec.encode(settings)
        self._obs[:] = 0.0
        self.bundle.reset()

    def observe(self, tel: Telemetry) -> np.ndarray:
        """The observation of this window (as the env builds it, before the bundle's normalisation), in a
        buffer the policy moves on by one window each call: valid until the next call."""
        return self.codec.advance(self._obs, tel, self.position)

    def normalised(self, obs: np.ndarray) -> np.ndarray:
        """The graph's input for one observation: shape (1, obs_size), the bundle's normalisation applied
        (in the bundle's buffer: valid until the next call)."""
        return self.bundle.normalise_one(obs)

    def decode(self, action: np.ndarray) -> tuple[np.ndarray, Settings]:
        """The policy's next position on the [-1, 1] scales and the settings it decodes to, from the graph's
        output for one observation (shape (1, n_knobs))."""
        settings, position = self.codec.decode(action[0], self.position)
        return position, settings

    def moved_to(self, position: np.ndarray) -> None:
        """What the host now holds (after the guards and the apply): the next observation's previous action."""
        self.position = np.asarray(position, dtype=np.float32)
