"""MLflow tracking: one store per results directory (or any tracking URI), runs with honest states.

- The default store is ``<results>/mlflow.db``; artifacts of a SQLite store live beside its database
  (``mlartifacts/``), never in the working directory's ./mlruns.
- A command that only reads (``runs``, ``evaluate RUN``, ``export``) never creates a database.
- Every run carries the tags ``scenario``, ``method``, ``seed``, ``command`` and ``run_state``
  (running, finished, interrupted, failed, killed), the code version and package versions.
  A run whose process died without closing it (SIGKILL, power loss) is found by its recorded
  host, pid and process start time and marked ``killed`` the next time the store is read.
- ``MLflowTracker`` is the MLflow side of ``agents.tracker.Tracker``.
"""

from __future__ import annotations

import contextlib
import os
import socket
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from vvho import ui
from vvho.ui import quiet_libraries
from vvho_env.errors import VVHOError
from vvho_env.paths import Paths
from vvho_env.provenance import git_commit, package_versions

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run

STATE_TAG = "run_state"
POLICY_MODEL = "policy"  # name of the MLflow model a `vvho export` logs
STATES = ("running", "finished", "interrupted", "failed", "killed")
_MLFLOW_STATUS = {"finished": "FINISHED", "interrupted": "KILLED", "failed": "FAILED", "killed": "KILLED"}


class RunNotFound(VVHOError, LookupError):
    """No run with that id (or id prefix) in the tracking store."""


class TrackingError(VVHOError):
    """The tracking store cannot be opened or written."""


def run_name(scenario: str, method: str, seed: int) -> str:
    """method.sSEED.MMDD-HHMMSS.scenario: what differs between runs comes first, so that truncated
    names in a list still tell runs apart."""
    return f"{method}.s{seed}.{time.strftime('%m%d-%H%M%S')}.{scenario}"


def parse_tags(items: Sequence[str]) -> dict[str, str]:
    """--tag key=value options; keys may not shadow the tags VVHO sets itself."""
    out = {}
    reserved = {"scenario", "method", "seed", "command", STATE_TAG, "git_commit"}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key or any(c.isspace() for c in key):
            raise TrackingError(f"--tag {item!r}: not accepted; accepted: key=value (a key without spaces)")
        if key in reserved or key.startswith(("mlflow.", "vvho.", "version.")):
            raise TrackingError(f"--tag {item!r}: the key {key!r} is set by VVHO itself; accepted: another key")
        out[key] = value.strip()
    return out


def _process_start(pid: int) -> str:
    """Start time of a process in clock ticks since boot (field 22 of /proc/PID/stat); '' if unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]


def _owner_tags() -> dict[str, str]:
    pid = os.getpid()
    return {"vvho.host": socket.gethostname(), "vvho.pid": str(pid), "vvho.pid_start": _process_start(pid)}


def owner_alive(tags: Mapping[str, str]) -> bool | None:
    """Whether the process that owns a running run still lives; None if it ran on another host."""
    if tags.get("vvho.host") != socket.gethostname():
        return None
    try:
        pid = int(tags.get("vvho.pid", ""))
    except ValueError:
        return None
    start = _process_start(pid)
    return bool(start) and start == tags.get("vvho.pid_start")


class MLflowTracker:
    """One open MLflow run as an ``agents.tracker.Tracker``."""

    def __init__(self, client: MlflowClient, run_id: str) -> None:
        self.client = client
        self._run_id = run_id

    @property
    def run_id(self) -> str:
        return self._run_id

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(self._run_id, params=items[i:i + 100])

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, int(step or 0)) for k, v in metrics.items()]
        for i in range(0, len(items), 1000):
            self.client.log_batch(self._run_id, metrics=items[i:i + 1000])

    def set_tags(self, tags: Mapping[str, str]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(self._run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_text(self, text: str, name: str) -> None:
        self.client.log_text(self._run_id, text, name)

    def log_dict(self, data: Mapping[str, Any], name: str) -> None:
        self.client.log_dict(self._run_id, dict(data), name)

    def log_artifact(self, path: Path, folder: str | None = None) -> None:
        if Path(path).is_dir():
            self.client.log_artifacts(self._run_id, str(path), folder)
        else:
            self.client.log_artifact(self._run_id, str(path), folder)

    def log_policy_model(self, bundle_dir: Path) -> str:
        """The bundle as the run's MLflow model (pyfunc over onnxruntime, see vvho/policy_model.py);
        returns its model URI."""
        import mlflow
        import numpy as np
        from mlflow.models import Model, ModelSignature
        from mlflow.types import Schema, TensorSpec

        from agents.bundle import PolicyBundle

        bundle = PolicyBundle(bundle_dir)
        # the logged model belongs to the run's experiment (MLflow would file it under the active one)
        mlflow.set_experiment(experiment_id=self.client.get_run(self._run_id).info.experiment_id)
        signature = ModelSignature(
            inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, bundle.obs_size))]),
            outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, len(bundle.knob_names)))]))
        info = Model.log(artifact_path=None, name=POLICY_MODEL, flavor=mlflow.pyfunc, run_id=self._run_id,
                         python_model=str(Path(__file__).with_name("policy_model.py")),
                         artifacts={"bundle": str(bundle_dir)}, signature=signature,
                         input_example=np.zeros((1, bundle.obs_size), dtype=np.float32),
                         pip_requirements=["numpy", "onnxruntime", f"vvho=={package_versions().get('vvho', '')}"],
                         tags={"knob_names": ",".join(bundle.knob_names),
                               "host_profile": str(bundle.manifest["host_profile"])})
        return str(info.model_uri)


@dataclass(frozen=True)
class RunInfo:
    """What `vvho runs` shows of one run."""

    run_id: str
    name: str
    experiment: str
    state: str
    started: float  # seconds since the epoch
    tags: dict[str, str]
    params: dict[str, str]
    metrics: dict[str, float]

    @property
    def scenario(self) -> str:
        return self.tags.get("scenario") or self.params.get("scenario", "")

    @property
    def method(self) -> str:
        return self.tags.get("method") or self.params.get("method", "")


class Store:
    """One MLflow tracking store: the results directory's own, or the URI given."""

    def __init__(self, paths: Paths, uri: str | None = None) -> None:
        from vvho.config import check_tracking_uri

        self.paths = paths
        try:
            self.uri = check_tracking_uri(uri) if uri is not None else paths.tracking_uri
        except ValueError as exc:
            raise TrackingError(f"--tracking-uri {uri}: {exc}; accepted: sqlite:///path.db, http(s)://host:port, "
                                "postgresql://..., mysql://..., databricks") from None
        self._client: MlflowClient | None = None

    @property
    def sqlite_path(self) -> Path | None:
        if not self.uri.startswith("sqlite:///"):
            return None
        return Path(self.uri[len("sqlite:///"):])

    @property
    def artifact_root(self) -> Path | None:
        """Where artifacts of new experiments go: beside a SQLite database; the server decides otherwise."""
        db = self.sqlite_path
        return None if db is None else db.parent / "mlartifacts"

    def exists(self) -> bool:
        db = self.sqlite_path
        return db is None or db.is_file()

    def describe(self) -> str:
        return str(self.sqlite_path) if self.sqlite_path is not None else self.uri

    def require(self) -> Store:
        """This store, or RunNotFound when it does not exist yet (checked without loading MLflow)."""
        if not self.exists():
            raise RunNotFound(f"no tracking store at {self.describe()} yet (no run was tracked there); "
                              "accepted: --results-dir or --tracking-uri of a store with runs")
        return self

    def client(self, create: bool = False) -> MlflowClient:
        """The MLflow client; a missing SQLite database is created only when `create`."""
        if self._client is not None:
            return self._client
        if not create:
            self.require()
        db = self.sqlite_path
        if db is not None:
            db.parent.mkdir(parents=True, exist_ok=True)
        quiet_libraries()
        import mlflow

        quiet_libraries()
        mlflow.set_tracking_uri(self.uri)
        try:
            self._client = mlflow.MlflowClient(self.uri)
        except mlflow.exceptions.MlflowException as exc:
            raise TrackingError(f"tracking store {self.describe()}: {exc.message}") from None
        return self._client

    def experiment_id(self, name: str) -> str:
        client = self.client(create=True)
        exp = client.get_experiment_by_name(name)
        if exp is not None:
            return str(exp.experiment_id)
        root = self.artifact_root
        location = (root / name).absolute().as_uri() if root is not None else None
        return str(client.create_experiment(name, artifact_location=location))

    # -- run lifecycle ------------------------------------------------------------------------------
    @contextlib.contextmanager
    def start(self, experiment: str, name: str, tags: Mapping[str, str],
              params: Mapping[str, Any] | None = None) -> Iterator[MLflowTracker]:
        """A new run, closed with an honest state: finished, interrupted (Ctrl-C) or failed. It is also
        MLflow's active run while open, so that MLflow's module-level logging calls reach it."""
        client = self.client(create=True)
        exp = self.experiment_id(experiment)
        run = client.create_run(exp, run_name=name, tags={
            "git_commit": git_commit(), STATE_TAG: "running", **_owner_tags(),
            **{f"version.{k}": v for k, v in package_versions().items()}, **tags})
        tracker = MLflowTracker(client, run.info.run_id)
        if params:
            tracker.log_params(params)
        with self._active(tracker):
            yield tracker

    @contextlib.contextmanager
    def reopen(self, run_id: str, tags: Mapping[str, str] | None = None) -> Iterator[MLflowTracker]:
        """Continue a run (resume): running again, then closed with an honest state."""
        tracker = MLflowTracker(self.client(), self._get_run(run_id).info.run_id)
        tracker.set_tags({STATE_TAG: "running", **_owner_tags(), **(tags or {})})
        with self._active(tracker):
            yield tracker

    def attach(self, run_id: str) -> MLflowTracker:
        """Log more into a run (an export) without touching its state."""
        return MLflowTracker(self.client(), self._get_run(run_id).info.run_id)

    @contextlib.contextmanager
    def _active(self, tracker: MLflowTracker) -> Iterator[None]:
        import mlflow

        state, active = "failed", False
        try:
            # MLflow's active experiment is process state (an export sets it too): make it this run's
            mlflow.set_experiment(experiment_id=tracker.client.get_run(tracker.run_id).info.experiment_id)
            mlflow.start_run(run_id=tracker.run_id)
            active = True
            yield
            state = "finished"
        except KeyboardInterrupt:
            state = "interrupted"
            raise
        finally:
            tracker.set_tags({STATE_TAG: state})
            if active:
                mlflow.end_run(status=_MLFLOW_STATUS[state])
            else:
                tracker.client.set_terminated(tracker.run_id, status=_MLFLOW_STATUS[state])

    # -- reading -------------------------------------------------------------------------------------
    def _experiments(self) -> dict[str, str]:
        """id -> name of every experiment in the store (a config may name its own, not just VVHO's)."""
        return {str(e.experiment_id): e.name for e in self.client().search_experiments()}

    def _info(self, run: Run, experiments: Mapping[str, str]) -> RunInfo:
        tags = dict(run.data.tags)
        state = tags.get(STATE_TAG) or run.info.status.lower()
        if run.info.status == "RUNNING" and owner_alive(tags) is False:
            # its process is gone without closing the run: say so in the store, once
            state = "killed"
            self.client().set_tag(run.info.run_id, STATE_TAG, state)
            self.client().set_terminated(run.info.run_id, status="KILLED")
            tags[STATE_TAG] = state
        return RunInfo(run.info.run_id, run.info.run_name or "", experiments.get(str(run.info.experiment_id), ""),
                       state, run.info.start_time / 1000.0, tags, dict(run.data.params), dict(run.data.metrics))

    def runs(self, scenario: str | None = None, method: str | None = None, limit: int = 50) -> list[RunInfo]:
        """Runs of the store, newest first, filtered by scenario and method tags."""
        if not self.exists():
            return []
        experiments = self._experiments()
        if not experiments:
            return []
        filters = []
        for key, value in (("scenario", scenario), ("method", method)):
            if value:
                filters.append(f"tags.{key} = '{value.replace(chr(39), '')}'")
        found = self.client().search_runs(list(experiments), " and ".join(filters), max_results=limit,
                                          order_by=["attributes.start_time DESC"])
        return [self._info(r, experiments) for r in found]

    def get(self, run_id: str) -> RunInfo:
        """A run by id or unique id prefix (reconciled like the list)."""
        return self._info(self._get_run(run_id), self._experiments() if self.exists() else {})

    def _get_run(self, run_id: str) -> Run:
        import mlflow

        client = self.client()
        text = run_id.strip()
        if len(text) == 32:
            try:
                return client.get_run(text)
            except mlflow.exceptions.MlflowException:
                pass
        elif len(text) >= 4:
            experiments = self._experiments()
            matches = [r for r in client.search_runs(list(experiments), max_results=5000) if
                       r.info.run_id.startswith(text)] if experiments else []
            if len(matches) == 1:
                return matches[0]
            if len(matches) > 1:
                raise RunNotFound(f"run id prefix {text!r} matches {len(matches)} runs; accepted: a longer prefix")
        raise RunNotFound(f"no run {text!r} in {self.describe()}; accepted: a run id or a unique prefix of at "
                          "least 4 characters (see `vvho runs list`)")

    def find(self, experiment: str, tags: Mapping[str, str]) -> list[RunInfo]:
        """Runs of `experiment` carrying every one of `tags`, newest first (reconciled like the list)."""
        if not self.exists():
            return []
        client = self.client()
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            return []
        flt = " and ".join(f"tags.`{k}` = '{str(v).replace(chr(39), '')}'" for k, v in tags.items())
        experiments = {str(exp.experiment_id): experiment}
        found = client.search_runs([exp.experiment_id], flt, max_results=50_000,
                                   order_by=["attributes.start_time DESC"])
        return [self._info(r, experiments) for r in found]

    def log_child(self, parent: str, name: str, tags: Mapping[str, str], metrics: Mapping[str, float],
                  texts: Mapping[str, str]) -> str:
        """A finished run nested under `parent` (same experiment) with its tags, metrics and text
        artifacts, written by this process in one go; its id. It is marked finished only once
        everything is written, so a kill in between leaves a run that resume does not trust."""
        from mlflow.entities import Metric

        client = self.client()
        exp = client.get_run(parent).info.experiment_id
        # owned by this process like any run, so that a kill between the last two writes (state tag, then
        # status) reconciles to 'killed' and resume redoes the trial, as a watcher of MLflow's status would
        run = client.create_run(exp, run_name=name, tags={"mlflow.parentRunId": parent, "git_commit": git_commit(),
                                                          STATE_TAG: "running", **_owner_tags(), **tags})
        now = int(time.time() * 1000)
        client.log_batch(run.info.run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()])
        for artifact, text in texts.items():
            client.log_text(run.info.run_id, text, artifact)
        client.set_tag(run.info.run_id, STATE_TAG, "finished")
        client.set_terminated(run.info.run_id, status="FINISHED")
        return str(run.info.run_id)

    def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        client = self.client()
        for k, v in tags.items():
            client.set_tag(run_id, k, v)

    def download(self, run_id: str, artifact: str, dst: Path) -> Path:
        import mlflow

        try:
            return Path(self.client().download_artifacts(self._get_run(run_id).info.run_id, artifact, str(dst)))
        except (mlflow.exceptions.MlflowException, OSError) as exc:
            raise RunNotFound(f"run {run_id} has no artifact {artifact!r} ({exc})") from None

    def read_text(self, run_id: str, artifact: str) -> str:
        with tempfile.TemporaryDirectory() as tmp:
            return self.download(run_id, artifact, Path(tmp)).read_text()


def ui_hint(store: Store) -> str:
    """How to look at the runs in MLflow's UI."""
    db = store.sqlite_path
    if db is None:
        return f"MLflow UI: {store.uri}" if urlsplit(store.uri).scheme.startswith("http") else f"store: {store.uri}"
    return f"mlflow ui --backend-store-uri {store.uri} (then http://127.0.0.1:5000)"


@contextlib.contextmanager
def tracked_run(experiment: str, name: str, params: Mapping[str, Any], uri: str | None = None,
                tags: Mapping[str, str] | None = None, results_dir: Path | None = None) -> Iterator[MLflowTracker]:
    """A run of the store of `results_dir` (or `uri`) with `params` logged and the scenario, method,
    seed and budget among them as tags, for commands that log through MLflow's module-level calls; its
    id and how to see it are printed when it starts."""
    standard = {"method": experiment.removeprefix("vvho-"),
                **{k: str(params[k]) for k in ("scenario", "method", "seed", "budget") if k in params}}
    paths = Paths.at(results_dir)
    store = Store(paths, uri)
    with store.start(experiment, name, {"command": experiment.removeprefix("vvho-"), **standard, **(tags or {})},
                     params) as tracker:
        flag = "" if paths == Paths.at() else f" --results-dir {paths.root}"
        ui.info(f"run {tracker.run_id} ({name}); see it with: vvho runs show {tracker.run_id[:8]}{flag}")
        yield tracker
