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
