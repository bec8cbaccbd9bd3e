"""Best-known folds in what methods have shown (baselines.best_known): a setting that beats an entry on the
search's own seeds replaces it in the cache, so "beats best-known" triggers an update, not a result."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from baselines.best_known import fold_in
from baselines.search import PhaseEvaluator, SearchConfig, best_settings
from vvho_env.scenarios import load_scenario

SC = load_scenario("neighbour-churn-v0")
SMOKE = SearchConfig(seeds=(1,), windows=2, warmup=1, grid=3, sweeps=1, starts=("default",))
# a search confined to one knob that matters little: its "best-known" is close to the defaults
WEAK = replace(SMOKE, knob_names=("ple_window",))


def test_a_better_setting_is_folded_in_and_cached(tmp_path: Path) -> None:
    weak = best_settings(SC, WEAK, cache_dir=tmp_path)
    better = best_settings(SC, SMOKE, cache_dir=tmp_path / "full").static.settings  # all knobs searched
    worse = dict(SC.settings_at_start(), vcpu_quota=2000)  # a starving quota helps nowhere
    improved = fold_in(SC, WEAK, [("worse", worse), ("method-x (seed 0)", better)], cache_dir=tmp_path)
    assert improved, "the full search's static setting beats a one-knob search somewhere"
    assert {x.source for x in improved} == {"method-x (seed 0)"}
    folded = best_settings(SC, WEAK, cache_dir=tmp_path)  # the cache now holds the improvement
    assert folded.static_objective < weak.static_objective
    assert [x["target"] for x in folded.folded] == [x.target for x in improved]
    # every entry is what the search's evaluator gives that setting on its phase (same seeds and windows)
    ev = PhaseEvaluator(SC, WEAK)
    for p, entry in enumerate(folded.per_phase):
        assert entry.objective <= weak.per_phase[p].objective
        assert abs(float(ev.score([entry.settings], [p])[0, 0]) - entry.objective) < 1e-12
        assert entry.objective <= folded.static_per_phase[p]  # static never beats a phase's entry
    # scored candidates are remembered: the same settings again cost nothing and change nothing
    assert fold_in(SC, WEAK, [("again", better), ("worse", worse)], cache_dir=tmp_path) == []
    assert best_settings(SC, WEAK, cache_dir=tmp_path).static.settings == folded.static.settings


def test_a_setting_no_better_than_best_known_changes_nothing(tmp_path: Path) -> None:
    before = best_settings(SC, SMOKE, cache_dir=tmp_path)
    assert fold_in(SC, SMOKE, [("itself", before.static.settings), ("default", SC.settings_at_start())],
                   cache_dir=tmp_path) == []
    after = best_settings(SC, SMOKE, cache_dir=tmp_path)
    assert [x.settings for x in after.per_phase] == [x.settings for x in before.per_phase]
    assert after.folded == [] and len(after.scored) == 2
