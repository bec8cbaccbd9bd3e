"""`vvho scenarios`, `vvho knobs`, `vvho configs`: what can be run, tuned and started from."""

from __future__ import annotations

from typing import Any

import typer

from vvho import ui


def scenarios_cmd(json_out: ui.JsonOpt = False, wide: ui.WideOpt = False) -> None:
    """List the scenario catalogue."""
    from vvho_env.scenarios import catalogue

    rows: list[dict[str, Any]] = [
        {"id": sc.id, "host_profile": sc.host_profile, "slo_us": sc.slo_us, "interval_s": sc.interval_s,
         "steps": sc.episode_intervals, "phases": [p.name for p in sc.phases], "description": sc.description}
        for sc in catalogue().values()]
    if json_out:
        ui.emit_json(rows)
        return
    ui.print_table([ui.Col("id", "id"), ui.Col("host profile", "id"), ui.Col("SLO us"), ui.Col("steps"),
                    ui.Col("phases", "text"), ui.Col("description", "text")],
                   [[r["id"], r["host_profile"], f"{r['slo_us']:g}", str(r["steps"]), ", ".join(r["phases"]),
                     r["description"]] for r in rows], wide=wide)


def knobs_cmd(json_out: ui.JsonOpt = False, wide: ui.WideOpt = False) -> None:
    """Show the knob registry: group, type, range, default, scope, change cost, and how each backend sets
    it (the libvirt backend's text comes from its knob drivers, so it cannot drift from the code)."""
    from vvho_env import knobs
    from vvho_env.live import drivers

    live = drivers.setters()
    rows: list[dict[str, Any]] = [
        {"name": k.name, "group": k.group.value, "kind": k.kind, "accepted": k.accepted(), "default": k.default,
         "unit": k.unit, "scope": k.scope, "change_cost": k.change_cost.value,
         "backends": {**k.setters, **({drivers.BACKEND: live[k.name]} if k.name in live else {})},
         "description": k.description, "source": k.source} for k in knobs.KNOBS]
    if json_out:
        ui.emit_json(rows)
        return
    ui.print_table([ui.Col("knob", "id"), ui.Col("group", "id"), ui.Col("accepted", "text"),
                    ui.Col("default", "id"), ui.Col("scope", "id"), ui.Col("change", "text"),
                    ui.Col("backends", "text")],
                   [[r["name"], r["group"], r["accepted"], repr(r["default"]), r["scope"], r["change_cost"],
                     "; ".join(f"{b}: {how}" for b, how in r["backends"].items())] for r in rows], wide=wide)


def configs_cmd(json_out: ui.JsonOpt = False) -> None:
    """List the experiment configs shipped with VVHO (usable by name: `vvho train --config NAME`)."""
    from vvho.config import load_config, shipped_configs

    rows: list[dict[str, Any]] = []
    for name, path in shipped_configs().items():
        cfg = load_config(path)
        summary = next((ln.lstrip("# ").strip() for ln in path.read_text().splitlines() if ln.startswith("#")), "")
        rows.append({"name": name, "path": str(path), "algorithm": cfg.algorithm, "scenario": cfg.env.scenario,
                     "total_timesteps": cfg.train.total_timesteps, "description": summary})
    if json_out:
        ui.emit_json(rows)
        return
    ui.print_table([ui.Col("name", "id"), ui.Col("algorithm", "id"), ui.Col("scenario", "id"),
                    ui.Col("steps"), ui.Col("description", "text")],
                   [[r["name"], r["algorithm"], r["scenario"], f"{r['total_timesteps']:,}", r["description"]]
                    for r in rows])


def register(app: typer.Typer) -> None:
    app.command("scenarios")(scenarios_cmd)
    app.command("knobs")(knobs_cmd)
    app.command("configs")(configs_cmd)
