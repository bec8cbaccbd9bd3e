"""No import arrow points upwards: vvho -> agents, baselines -> vvho_env, and nothing below vvho/
imports vvho/ (imports inside functions and under TYPE_CHECKING count too). The first-party import
graph is read from the source with ast, so the test needs nothing imported."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("vvho_env", "baselines", "agents", "vvho")
# What each package may import besides itself (agents and baselines are siblings: neither needs the other)
ALLOWED = {
    "vvho_env": set(),
    "baselines": {"vvho_env"},
    "agents": {"vvho_env"},
    "vvho": {"vvho_env", "baselines", "agents"},
}


def _imports(path: Path) -> set[str]:
    """Top-level first-party packages a module imports, anywhere in it."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) in (
                "import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant):
            names = [str(node.args[0].value)]
        out |= {n.split(".")[0] for n in names if n.split(".")[0] in PACKAGES}
    return out


def graph() -> dict[str, set[str]]:
    """module path -> first-party packages it imports."""
    return {str(p.relative_to(ROOT)): _imports(p) for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def test_no_import_points_upwards() -> None:
    upward = []
    for module, imported in graph().items():
        pkg = module.split("/")[0]
        for target in sorted(imported - {pkg} - ALLOWED[pkg]):
            upward.append(f"{module} imports {target}")
    assert not upward, "imports against the layering:\n" + "\n".join(upward)


def test_the_graph_sees_imports_everywhere() -> None:
    """The walker finds function-level and dynamic imports (so the test above cannot pass vacuously)."""
    g = graph()
    assert "agents" in g["vvho/experiments.py"] and "vvho_env" in g["agents/train.py"]
    assert {"vvho"} <= g["vvho/cli.py"]  # mounts its command modules by name


# The vocabulary every layer shares: errors <- knobs <- sim.profiles <- scenarios <- types (Backend names
# Scenario). Module-level imports only (TYPE_CHECKING ones included): a function-level import is how a
# module reaches a later layer on purpose.
VOCABULARY = ("vvho_env/errors.py", "vvho_env/knobs.py", "vvho_env/sim/profiles.py", "vvho_env/scenarios.py",
              "vvho_env/types.py")


def _module_imports(path: Path) -> set[str]:
    """vvho_env modules a module imports at module level (also under `if TYPE_CHECKING:`)."""
    out = set()
    body = ast.parse(path.read_text(), str(path)).body
    nodes = [n for stmt in body for n in ([stmt] + (stmt.body if isinstance(stmt, ast.If) else []))]
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            mod = node.module
            if mod == "vvho_env":  # `from vvho_env import knobs`
                out |= {f"vvho_env/{a.name}.py" for a in node.names}
            elif mod.startswith("vvho_env."):
                out.add(mod.replace(".", "/") + ".py")
    return out


def test_the_vocabulary_modules_import_each_other_without_a_cycle() -> None:
    edges = {m: _module_imports(ROOT / m) & set(VOCABULARY) for m in VOCABULARY}
    order = {m: i for i, m in enumerate(VOCABULARY)}
    backwards = [f"{m} imports {t}" for m, ts in edges.items() for t in sorted(ts) if order[t] >= order[m]]
    assert not backwards, "imports against the order errors < knobs < profiles < scenarios < types:\n" + \
        "\n".join(backwards)
