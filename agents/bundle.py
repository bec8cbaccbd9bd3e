"""Load and run a policy bundle: an ONNX graph of the deterministic actor + a JSON manifest.

Hosts load policies with this module alone: it needs numpy and onnxruntime, never torch, SB3 or
pickle. The manifest says which knobs the policy acts on and in which order, the host profile it was
trained for, the action mode, the observation normalisation (mean, var, clip, epsilon from
VecNormalize), the window history the observation stacks, the range each knob was trained over
(knob_bounds, which a host agent never exceeds), and the sha256 of the graph, which is checked before
the graph is loaded.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from vvho_env import knobs
from vvho_env.errors import VVHOError

MANIFEST = "manifest.json"
GRAPH = "policy.onnx"
FORMAT_VERSION = 1


class BundleError(VVHOError, ValueError):
    """A bundle that cannot be used here: missing files, bad checksum, knobs that do not match."""


REQUIRED = ("knob_names", "action_low", "action_high", "obs_size", "action_mode", "history", "scenario",
            "host_profile")


def knob_bounds(names: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """The range each knob was trained over (the registry's; the env acts over all of it), which a host
    agent never exceeds whatever its operator's limits say."""
    out: dict[str, dict[str, Any]] = {}
    for n in names:
        k = knobs.get(n)
        if k.kind in ("categorical", "bool"):
            out[n] = {"choices": list(k.choices)}
        else:
            out[n] = {"low": k.low, "high": k.high,
                      "special": [v for v in (k.off, k.unlimited) if v is not None]}
    return out


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class PolicyBundle:
    """A deployed policy: ``act(raw_obs)`` returns actions in [-1, 1] over ``knob_names``.

    Recurrent policies carry their LSTM state between calls; ``reset()`` starts a new episode.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        mpath = self.path / MANIFEST
        if not self.path.is_dir():
            raise BundleError(f"{self.path}: not a directory; accepted: a bundle directory written by `vvho export` "
                              f"(it holds {MANIFEST} and {GRAPH})")
        try:
            self.manifest: dict[str, Any] = json.loads(mpath.read_text())
        except OSError as exc:
            raise BundleError(f"{mpath}: cannot read the bundle manifest ({exc.strerror or exc}); accepted: a bundle "
                              "directory written by `vvho export`") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise BundleError(f"{mpath}: the manifest is not valid JSON ({exc})") from None
        m = self.manifest
        if not isinstance(m, dict):
            raise BundleError(f"{mpath}: the manifest is a {type(m).__name__}; accepted: a JSON object")
        if m.get("format_version") != FORMAT_VERSION:
            raise BundleError(f"{mpath}: format_version {m.get('format_version')!r} not accepted; "
                              f"accepted: {FORMAT_VERSION}")
        graph = self.path / m.get("graph", GRAPH)
        if not graph.exists():
            raise BundleError(f"{graph}: the bundle's ONNX graph is missing")
        digest = sha256_file(graph)
        if digest != m.get("graph_sha256"):
            raise BundleError(f"{graph}: sha256 {digest} does not match the manifest's {m.get('graph_sha256')}; "
                              "the graph was changed or damaged after export")
        missing = [k for k in REQUIRED if k not in m]
        if missing:
            raise BundleError(f"{mpath}: the manifest lacks {', '.join(missing)}; the bundle is incomplete")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(graph), sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own classes (InvalidProtobuf, InvalidGraph, Fail)
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise BundleError(f"{graph}: not a loadable ONNX graph ({type(exc).__name__}: {first[:160]}); accepted: "
                              "the policy.onnx that `vvho export` wrote") from None
        self.knob_names: tuple[str, ...] = tuple(m["knob_names"])
        norm = m.get("obs_normalisation")
        self._mean = np.asarray(norm["mean"], dtype=np.float64) if norm else None
        self._var = np.asarray(norm["var"], dtype=np.float64) if norm else None
        self._clip = float(norm["clip_obs"]) if norm else 0.0
        self._eps = float(norm["epsilon"]) if norm else 0.0
        # the divisor once, not per call: a host agent normalises every control interval
        self._std = np.sqrt(self._var + self._eps) if self._var is not None else None
        self._low = np.asarray(m["action_low"], dtype=np.float32)
        self._high = np.asarray(m["action_high"], dtype=np.float32)
        self.recurrent = m.get("recurrent") is not None
        # the graph's input for one observation and the float64 work space of its normalisation, reused by
        # every call of normalise_one (a host agent normalises one observation per interval)
        self._one = np.zeros((1, self.obs_size), dtype=np.float32)
        self._one64 = np.zeros(self.obs_size, dtype=np.float64)
        self._clip_low = np.full(self.obs_size, -self._clip)  # ufuncs take arrays faster than Python floats
        self._clip_high = np.full(self.obs_size, self._clip)
        self._state: tuple[np.ndarray, np.ndarray] | None = None
        self._episode_start = np.ones(1, dtype=np.float32)
        # that buffer and the action's for one observation, bound to the graph once (onnxruntime's IOBinding,
        # by address: the graph reads and writes these arrays in place), so that run() of normalise_one's
        # output skips the per-call feeds, input validation and output allocation of session.run (~5 us of
        # the ~12-20 us a 64x64 MLP's run takes). Feed-forward graphs only: a recurrent one also feeds state.
        self._action_one = np.zeros((1, len(self.knob_names)), dtype=np.float32)
        self._binding: ort.IOBinding | None = None
        if not self.recurrent:
            self._binding = self.session.io_binding()
            self._binding.bind_input("obs", "cpu", 0, np.float32, list(self._one.shape), self._one.ctypes.data)
            self._binding.bind_output("action", "cpu", 0, np.float32, list(self._action_one.shape),
                                      self._action_one.ctypes.data)

    @property
    def obs_size(self) -> int:
        return int(self.manifest["obs_size"])

    def check_knobs(self, knob_names: Sequence[str]) -> None:
        """Raise BundleError unless the host acts on exactly the bundle's knobs, in its order."""
        got = tuple(knob_names)
        if got != self.knob_names:
            missing = [k for k in self.knob_names if k not in got]
            extra = [k for k in got if k not in self.knob_names]
            detail = (f"missing on this backend: {', '.join(missing) or 'none'}; not in the bundle: "
                      f"{', '.join(extra) or 'none'}") if (missing or extra) else "same knobs, different order"
            raise BundleError(f"{self.path}: the bundle acts on knobs {list(self.knob_names)} (host profile "
                              f"{self.manifest.get('host_profile')!r}) but this env acts on {list(got)}: {detail}")

    def reset(self, batch: int = 1) -> None:
        if self.recurrent:
            r = self.manifest["recurrent"]
            shape = (r["n_layers"], batch, r["hidden_size"])
            self._state = (np.zeros(shape, dtype=np.float32), np.zeros(shape, dtype=np.float32))
        self._episode_start = np.ones(batch, dtype=np.float32)

    def normalise(self, obs: np.ndarray) -> np.ndarray:
        """VecNormalize's observation transform, from the manifest's statistics."""
        x = np.asarray(obs, dtype=np.float64)
        if self._mean is None or self._std is None:
            return x.astype(np.float32)
        return np.clip((x - self._mean) / self._std, -self._clip, self._clip).astype(np.float32)

    def normalise_one(self, obs: np.ndarray) -> np.ndarray:
        """normalise() of one observation (shape (obs_size,)) as the graph's input (shape (1, obs_size)), in
        a buffer this bundle reuses: valid until the next call. The same values as normalise()."""
        if self._mean is None or self._std is None:
            self._one[0] = obs
            return self._one
        x = self._one64
        np.subtract(obs, self._mean, out=x)
        np.divide(x, self._std, out=x)
        np.minimum(np.maximum(x, self._clip_low, out=x), self._clip_high, out=x)  # np.clip's checks cost more
        self._one[0] = x
        return self._one

    def act(self, obs: np.ndarray) -> np.ndarray:
        """Actions for one observation (shape (obs_size,)) or a batch (shape (n, obs_size))."""
        x = np.asarray(obs)
        single = x.ndim == 1
        action = self.run(self.normalise(x.reshape(1, -1) if single else x))
        return action[0] if single else action

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Actions for a batch of normalised observations (shape (n, obs_size)): the graph, clipped to the
        action bounds. For normalise_one's output, in this bundle's buffer: valid until the next such call."""
        if batch is self._one and self._binding is not None:  # normalise_one's output: the bound buffers
            self.session.run_with_iobinding(self._binding)
            return self._clip_in_place(self._action_one)
        if batch.shape[1] != self.obs_size:
            raise BundleError(f"observation has {batch.shape[1]} features; the bundle expects {self.obs_size}")
        feeds: dict[str, np.ndarray] = {"obs": batch}
        if self.recurrent:
            if self._state is None or self._state[0].shape[1] != batch.shape[0]:
                self.reset(batch.shape[0])
            assert self._state is not None
            feeds.update(state_h=self._state[0], state_c=self._state[1], episode_start=self._episode_start)
            action, h, c = self.session.run(["action", "state_h_out", "state_c_out"], feeds)
            self._state = (h, c)
            self._episode_start = np.zeros(batch.shape[0], dtype=np.float32)
        else:
            (action,) = self.session.run(["action"], feeds)
        return self._clip_in_place(action)

    def _clip_in_place(self, action: np.ndarray) -> np.ndarray:
        """action clipped to the action bounds in place (the graph's output is a new array or this bundle's
        bound buffer): np.clip's Python-level checks cost more than the clip."""
        return np.minimum(np.maximum(action, self._low, out=action), self._high, out=action)
