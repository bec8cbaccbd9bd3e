"""``vvho compare``: methods x scenarios x seeds through the one harness, tracked, resumable, reported.

Plan: every method of the suite's ``compare`` section on every scenario it judges (its training
scenarios on held-out seeds, its held-out scenarios), ``seeds`` trials each. A tuner's trial tunes for
``budget`` windows of a tuning episode, then is evaluated on the trial's evaluation episode; fixed
settings (static-default, expert) and the references (best-known, best-static) are evaluated only;
an RL agent is trained once within the command on the suite's training scenarios (or taken from a
run or bundle) and each of its trials is one evaluation episode. Every method of a scenario meets the
same evaluation episodes, so their figures are paired.

Engine: jobs go through a ``vvho.runner.Runner`` (parallel spawned processes by default). The
best-known searches run as jobs of their own before any trial that needs them, cached, outside the
timed trials. The compare is one MLflow parent run (tag ``compare.key``: the suite's content,
methods, budgets, seeds and agents) with a child run per trial, logged by this process as each trial
ends; the same command after a kill reopens the parent and runs only the trials that have no
finished child run (a killed training resumes from its checkpoint).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field
from typing import Any

from vvho.runner import Runner, local_runner
from vvho.suites import REFERENCES, SAFETY_SUFFIX, RLAgent, Suite
from vvho.trials import (
    POLICY,
    TUNER,
    FoldJob,
    HParamJob,
    SearchJob,
    TrainJob,
    Trial,
    run_fold,
    run_hparams,
    run_search,
    run_training,
    run_trial,
)
from vvho_env import SIM_HASH
from vvho_env.errors import VVHOError
from vvho_env.metrics import tracked
from vvho_env.paths import Paths
from vvho_env.scenarios import load_scenario

EXPERIMENT = "vvho-compare"
TRIAL_ARTIFACT = "trial.json"


class CompareError(VVHOError):
    """A compare that cannot run as asked."""


@dataclass(frozen=True)
class ComparePlan:
    suite: Suite
    suite_ref: str  # how training jobs find the suite again (a shipped name or a file path)
    methods: tuple[str, ...]
    budget: int
    seeds: tuple[int, ...]
    workers: int
    search_level: str
    tune_hparams: bool = True  # tuners' hyperparameters swept on the suite's training scenarios first

    @property
    def agents(self) -> dict[str, RLAgent]:
        """The RL agents this compare needs: judged as themselves, or under their safety layer."""
        return {a.name: a for a in self.suite.compare.rl
                if a.name in self.methods or f"{a.name}{SAFETY_SUFFIX}" in self.methods}

    @property
    def key(self) -> str:
        blob = {"suite": self.suite.model_dump(mode="json", exclude={"compare", "description"}),
                "scenarios": [load_scenario(r).key for r, _ in self.suite.evaluation_refs()],
                "methods": self.methods, "budget": self.budget, "seeds": self.seeds,
                "agents": {k: a.model_dump() for k, a in self.agents.items()}, "search": self.search_level,
                "sim": SIM_HASH, "hparams": "training scenarios" if self.tune_hparams else "defaults"}
        return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def scenarios(self) -> list[tuple[str, str, str]]:
        """(reference, key, role) of every judged scenario."""
        return [(r, load_scenario(r).key, role) for r, role in self.suite.evaluation_refs()]


def make_plan(suite: Suite, suite_ref: str, methods: Sequence[str] | None = None, budget: int | None = None,
              seeds: int | None = None, workers: int | None = None, tune_hparams: bool | None = None) -> ComparePlan:
    c = suite.compare
    chosen = tuple(methods) if methods else tuple(c.methods)
    known = [*c.methods, *REFERENCES, *(a.name for a in c.rl), *(a.name + SAFETY_SUFFIX for a in c.rl if a.safety)]
    from vvho.suites import TUNERS

    known += [t for t in TUNERS if t not in known]
    for m in chosen:
        if m not in known:
            raise CompareError(f"--methods: {m!r} not accepted; accepted: {', '.join(dict.fromkeys(known))}")
    n = seeds or c.seeds
    return ComparePlan(suite, suite_ref, chosen, budget or c.budget, tuple(range(c.first_seed, c.first_seed + n)),
                       workers or c.workers, c.reference_search,
                       c.tune_hparams if tune_hparams is None else tune_hparams)


@dataclass
class CompareResult:
    plan: ComparePlan
    parent_run_id: str
    records: list[dict[str, Any]]
    training: dict[str, dict[str, Any]] = field(default_factory=dict)  # agent -> run id, bundle, steps
    resumed: int = 0  # trials found finished in the store
    skipped: dict[str, str] = field(default_factory=dict)  # method -> why it was left out
    wall_s: float = 0.0


Log = Callable[[str], None]


def _available(plan: ComparePlan) -> tuple[list[str], dict[str, str]]:
    from vvho.compare_methods import available_tuners

    ok, skipped = [], {}
    tuners = available_tuners()
    for m in plan.methods:
        if m.removesuffix(SAFETY_SUFFIX) in plan.agents or m in tuners:
            ok.append(m)
        else:
            skipped[m] = "not provided by this version of the tuners (baselines/)"
    return ok, skipped


def run_compare(plan: ComparePlan, paths: Paths, uri: str | None = None, log: Log = print,
                on_trial: Callable[[dict[str, Any], int, int], None] | None = None,
                runner: Runner | None = None) -> CompareResult:
    """Run (or resume) the compare of `plan`; every trial logged as it ends."""
    from vvho.tracking import Store

    t0 = time.time()
    store = Store(paths, uri)
    methods, skipped = _available(plan)
    for m, why in skipped.items():
        log(f"method {m} left out: {why}")
    scenarios = plan.scenarios()
    parents = store.find(EXPERIMENT, {"compare.key": plan.key, "compare.role": "parent"})
    done: dict[str, dict[str, Any]] = {}
    run_ids: dict[str, str] = {}  # trial key -> its child run
    if parents:
        parent_id = parents[0].run_id
        for child in store.find(EXPERIMENT, {"mlflow.parentRunId": parent_id, "compare.role": "trial"}):
            if child.state == "finished" and child.tags.get("compare.trial") not in done:
                done[child.tags["compare.trial"]] = json.loads(store.read_text(child.run_id, TRIAL_ARTIFACT))
                run_ids[child.tags["compare.trial"]] = child.run_id
        log(f"resuming compare {parent_id[:8]}: {len(done)} trials already finished are kept")
    ctx = store.reopen(parents[0].run_id) if parents else store.start(
        EXPERIMENT, f"compare.{plan.suite.name}.{time.strftime('%m%d-%H%M%S')}",
        {"command": "compare", "method": "compare", "scenario": plan.suite.name, "seed": str(plan.seeds[0]),
         "budget": str(plan.budget), "compare.key": plan.key, "compare.role": "parent", "suite": plan.suite.name},
        {"suite": plan.suite.name, "methods": ",".join(methods), "budget_windows": plan.budget,
         "seeds": ",".join(map(str, plan.seeds)), "workers": plan.workers, "reference_search": plan.search_level})
    with ctx as parent:
        parent_id = parent.run_id
        log(f"compare run {parent_id} ({len(methods)} methods x {len(scenarios)} scenarios x {len(plan.seeds)} seeds)")
        engine = _Engine(plan, paths, uri, store, parent_id, methods, scenarios, done, run_ids, log, on_trial,
                         runner or local_runner(plan.workers))
        try:
            engine.run()
        finally:
            engine.runner.close()
        result = CompareResult(plan, parent_id, list(engine.records.values()), engine.training, len(done), skipped,
                               time.time() - t0)
        from vvho.report import write_report

        report_dir = paths.root / plan.suite.name
        files = write_report(result, report_dir)
        for f in files:
            parent.log_artifact(f, "report")
        parent.log_metrics({"compare/trials": float(len(result.records)), "compare/wall_s": result.wall_s})
    return result


class _Engine:
    """Submits jobs as their inputs become ready and logs every finished trial."""

    def __init__(self, plan: ComparePlan, paths: Paths, uri: str | None, store: Any, parent_id: str,
                 methods: list[str], scenarios: list[tuple[str, str, str]], done: dict[str, dict[str, Any]],
                 run_ids: dict[str, str], log: Log, on_trial: Callable[[dict[str, Any], int, int], None] | None,
                 runner: Runner) -> None:
        self.plan, self.paths, self.uri, self.store, self.parent_id = plan, paths, uri, store, parent_id
        self.methods, self.scenarios, self.log, self.on_trial, self.runner = methods, scenarios, log, on_trial, runner
        self.records: dict[str, dict[str, Any]] = dict(done)
        self.run_ids = dict(run_ids)
        self.training: dict[str, dict[str, Any]] = {}
        self.pending: dict[Future[Any], tuple[str, Any]] = {}
        self.total = len(methods) * len(scenarios) * len(plan.seeds)

    def _trials(self, method: str, kind: str, refs: Sequence[tuple[str, str, str]], **extra: Any) -> list[Trial]:
        budget = self.plan.budget if kind == TUNER else 0
        out = []
        for ref, key, role in refs:
            for seed in self.plan.seeds:
                t = Trial(method, kind, ref, key, role, seed, budget, str(self.paths.root), self.plan.search_level,
                          **extra)
                if t.key not in self.records:
                    out.append(t)
        return out

    def _submit(self, kind: str, fn: Any, arg: Any) -> None:
        self.pending[self.runner.submit(fn, arg)] = (kind, arg)

    def run(self) -> None:
        from vvho.compare_methods import sweeps_hparams

        # the longest jobs first: training, then the reference searches, then the trials that need neither
        for name, agent in self.plan.agents.items():
            if any(self._trials(m, POLICY, self.scenarios) for m in self._policy_methods(name)):
                self._start_agent(name, agent)
        if self.references:
            for entry in self.scenarios:  # cached after the first time: it names the references' version
                self._submit("search", run_search, SearchJob(entry[0], str(self.paths.root), self.plan.search_level))
        policies = {m for name in self.plan.agents for m in self._policy_methods(name)}
        for m in self.methods:
            if m not in self.references and m not in policies:
                if self.plan.tune_hparams and sweeps_hparams(m):  # cached: on resume it costs nothing
                    held_out = tuple(r for r, _, role in self.scenarios if role != "train")
                    self._submit("hparams", run_hparams, HParamJob(m, tuple(self.plan.suite.train), held_out,
                                                                   self.plan.budget, str(self.paths.root)))
                    continue
                for t in self._trials(m, TUNER, self.scenarios):
                    self._submit("trial", run_trial, t)
        self._drain()
        if self.references:  # every setting a method held, re-scored: best-known is the best anything showed
            for entry in self.scenarios:
                held = self._held(entry[1])
                if held:
                    self._submit("fold", run_fold, FoldJob(entry[0], str(self.paths.root), self.plan.search_level,
                                                           held))
            self._drain()

    @property
    def references(self) -> list[str]:
        return [m for m in self.methods if m in REFERENCES]

    def _drain(self) -> None:
        while self.pending:
            finished, _ = wait(list(self.pending), return_when=FIRST_COMPLETED)
            for fut in finished:
                kind, arg = self.pending.pop(fut)
                result = fut.result()  # a failed job is a bug or bad input: it stops the compare, logged so far
                if kind == "trial":
                    self._record(result)
                elif kind == "search":
                    self.log(f"best-known search for {load_scenario(arg.scenario_ref).id} ready "
                             f"({result['wall_s']:.0f} s, cached)")
                    self._reference_ready(arg.scenario_ref, result["reference"])
                elif kind == "hparams":
                    self._hparams_ready(result)
                elif kind == "fold":
                    sid = load_scenario(arg.scenario_ref).id
                    for x in result["improved"]:
                        self.log(f"best-known of {sid} improved: {x['target']} J {x['before']:.4f} -> {x['after']:.4f}"
                                 f", a setting {x['source']} held")
                    self.log(f"best-known of {sid}: {result['candidates']} settings methods held re-scored "
                             f"({result['wall_s']:.0f} s), {len(result['improved'])} improvements folded in")
                    self._reference_ready(arg.scenario_ref, result["reference"])
                else:
                    self._agent_ready(result)

    def _hparams_ready(self, info: dict[str, Any]) -> None:
        """Run a tuner's trials with the hyperparameters its sweep on the training scenarios chose."""
        m = info["method"]
        self.log(f"{m}: hyperparameters {info['hparams']} from a sweep on the training scenarios "
                 f"{', '.join(info['scenarios'])}: {info['windows']:,} windows"
                 + (" (cached)" if info["cached"] else f" ({info['wall_s']:.0f} s)") + ", counted in its budget")
        for t in self._trials(m, TUNER, self.scenarios, hparams=json.dumps(info["hparams"], sort_keys=True),
                              hparam_windows=info["windows"], hparam_scenarios=tuple(info["scenarios"])):
            self._submit("trial", run_trial, t)

    def _reference_ready(self, scenario_ref: str, reference: str) -> None:
        """Evaluate the references of a scenario at this version; records of earlier versions are dropped."""
        entry = next(s for s in self.scenarios if s[0] == scenario_ref)
        stale = [k for k, r in self.records.items() if r["trial"]["scenario_key"] == entry[1]
                 and r["trial"]["method"] in REFERENCES and r["trial"].get("reference", "") != reference]
        for k in stale:  # kept in the store, no longer counted as a trial of this compare
            del self.records[k]
            if k in self.run_ids:
                self.store.set_tags(self.run_ids.pop(k), {"compare.role": "superseded",
                                                          "compare.superseded_by": reference})
        for m in self.references:
            for t in self._trials(m, TUNER, [entry], reference=reference):
                self._submit("trial", run_trial, t)

    def _held(self, scenario_key: str) -> tuple[tuple[str, str], ...]:
        """(source, JSON settings) of every distinct setting the methods held on a scenario."""
        out: dict[str, str] = {}
        for r in self.records.values():
            t = r["trial"]
            if t["scenario_key"] != scenario_key or t["method"] in REFERENCES or "held_per_step" not in r:
                continue
            for s in r["held_per_step"]["settings"]:
                out.setdefault(json.dumps(s, sort_keys=True), f"{t['method']} (seed {t['seed']})")
        return tuple((src, s) for s, src in out.items())

    def _policy_methods(self, agent: str) -> list[str]:
        return [m for m in (agent, agent + SAFETY_SUFFIX) if m in self.methods]

    def _start_agent(self, name: str, agent: RLAgent) -> None:
        if agent.policy is not None:
            from vvho.experiments import resolve_policy

            bundle = resolve_policy(agent.policy, self.paths, self.uri)
            steps = -1
            run_id = bundle.manifest.get("run_id")
            if run_id:
                try:
                    steps = int(self.store.get(run_id).metrics.get("budget/train_steps", -1))
                except VVHOError:
                    steps = -1
            self._agent_ready({"agent": name, "run_id": run_id, "bundle": str(bundle.path), "train_steps": steps,
                               "wall_s": 0.0})
            return
        assert agent.config is not None
        tags = {"mlflow.parentRunId": self.parent_id, "compare.key": self.plan.key, "compare.agent": name,
                "compare.role": "training"}
        earlier = self.store.find(EXPERIMENT, {"compare.key": self.plan.key, "compare.agent": name})
        resume = earlier[0].run_id if earlier else None
        self.log(f"training {name} ({agent.config}, {agent.steps or 'the config s'} steps) on the suite's training "
                 "scenarios" + (f"; resuming run {resume[:8]}" if resume else ""))
        self._submit("train", run_training, TrainJob(name, agent.config, self.plan.suite_ref, agent.steps,
                                                     str(self.paths.root), self.uri, tags, resume))

    def _agent_ready(self, info: dict[str, Any]) -> None:
        name = info["agent"]
        self.training[name] = info
        self.log(f"{name}: policy ready (run {str(info['run_id'])[:8]}, {info['train_steps']:,} training steps, "
                 f"bundle {info['bundle']})")
        for m in self._policy_methods(name):
            for t in self._trials(m, POLICY, self.scenarios, bundle=info["bundle"], train_steps=info["train_steps"],
                                  safety=m.endswith(SAFETY_SUFFIX)):
                self._submit("trial", run_trial, t)

    def _record(self, rec: dict[str, Any]) -> None:
        t = rec["trial"]
        budget = {f"budget/{k}": float(v) for k, v in rec["budget"].items()}
        tags = {"scenario": rec["scenario"], "scenario_key": t["scenario_key"], "scenario_ref": t["scenario_ref"],
                "role": t["role"], "method": t["method"], "seed": str(t["seed"]),
                "budget": f"{t['budget']} windows" if t["kind"] == TUNER else f"{t['train_steps']} train_steps",
                "command": "compare", "compare.role": "trial", "compare.trial": rec["key"],
                "compare.key": self.plan.key}
        if t.get("hparam_scenarios"):  # where the tuner's hyperparameters were swept (never a held-out scenario)
            tags["hparam_scenarios"] = ",".join(t["hparam_scenarios"])
            tags["hparams"] = t["hparams"]
        metrics = {**tracked({k: v for k, v in rec["metrics"].items() if v is not None}), **budget}
        self.run_ids[rec["key"]] = self.store.log_child(
            self.parent_id, f"{rec['scenario']}__{t['method']}__s{t['seed']}", tags, metrics,
            {TRIAL_ARTIFACT: json.dumps(rec)})
        self.records[rec["key"]] = rec
        if self.on_trial is not None:
            self.on_trial(rec, len(self.records), self.total)
