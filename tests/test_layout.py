"""The package layout's import rules (issue 13), read from the source with ``ast``.

The stages form a pipeline: retrieval imports neither train nor evaluation, train does not
import evaluation, serve imports neither and no library stage imports serve, nothing in the library imports the CLI (only ``__main__`` may), the
module import graph has no cycle, and library code never exits the process. Imports are
read wherever they are, at the top of a module or inside a function.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import simclr_watches

# (importing stage, imported stage): imports that run against the pipeline. serve (the web service) sits on
# top of retrieval: it imports neither train nor evaluation, and no library stage imports it. detect (the box
# head: its model, training data and inference) sits below retrieval, which runs it: it imports neither
# retrieval, train nor evaluation.
LIBRARY_STAGES = ("core", "data", "model", "weights", "detect", "retrieval", "train", "evaluation")
FORBIDDEN_STAGES = {("retrieval", "train"), ("retrieval", "evaluation"), ("train", "evaluation"),
                    ("detect", "retrieval"), ("detect", "train"), ("detect", "evaluation"),
                    ("serve", "train"), ("serve", "evaluation"), *((stage, "serve") for stage in LIBRARY_STAGES)}
ENTRY_POINTS = {"cli", "__main__"}  # may import the CLI
EXITS = {("sys", "exit"), ("os", "_exit")}
# Broken today in files of other parts of issue 13; remove an entry once it is fixed (the test then insists).
KNOWN_VIOLATIONS: list[str] = []


def module_names(root: Path) -> dict[str, Path]:
    """Dotted name -> file of every module of the package in folder ``root`` (``pkg.sub`` for ``sub/__init__.py``)."""
    names = {}
    for path in sorted(root.rglob("*.py")):
        parts = [root.name, *path.relative_to(root).with_suffix("").parts]
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def _imported_names(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> list[str]:
    """Absolute dotted names an import statement may load (``from a import b``: ``a`` and ``a.b``)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:  # relative: from the module's package, one level up per extra dot
        parts = module.split(".") if is_package else module.split(".")[:-1]
        parts = parts[: len(parts) - node.level + 1]
        base = ".".join(parts + ([node.module] if node.module else []))
    else:
        base = node.module or ""
    return [base, *(f"{base}.{alias.name}" for alias in node.names)]


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module -> the package's modules it imports anywhere in its source.

    ``from pkg.a import name`` counts as an import of ``pkg.a`` (or of ``pkg.a.name`` when that
    is a module); a package's ``__init__`` counts only when it is the module named.
    """
    modules = module_names(root)
    graph = {}
    for module, path in modules.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [n for n in _imported_names(node, module, path.name == "__init__.py") if n in modules]
                submodules = [n for n in names if n != names[0]] if isinstance(node, ast.ImportFrom) else names
                deps.update(submodules or names[:1])
        graph[module] = deps - {module}
    return graph


def _stage(module: str) -> str:
    """``pkg.retrieval.search`` -> ``retrieval``; ``pkg.cli`` -> ``cli``; ``pkg`` -> ``""``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle ``[a, b, ..., a]`` of the graph, starting at its first module by name, or None.

    A depth-first search; the rotation makes the answer independent of where the search began.
    """
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                loop = path[path.index(dep):]
                first = loop.index(min(loop))
                return loop[first:] + loop[:first] + [min(loop)]
            if dep not in state and (cycle := visit(dep)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def exit_calls(root: Path) -> list[str]:
    """``module:line`` of every ``sys.exit(...)`` or ``os._exit(...)`` call in the package's library modules."""
    found = []
    for module, path in module_names(root).items():
        if _stage(module) in ENTRY_POINTS:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and isinstance(node.func.value, ast.Name) and (node.func.value.id, node.func.attr) in EXITS):
                found.append(f"{module}:{node.lineno}")
    return found


def violations(root: Path) -> list[str]:
    """Every broken layout rule of the package in folder ``root``, in words (empty: all kept)."""
    graph = import_graph(root)
    out = []
    for module, deps in sorted(graph.items()):
        for dep in sorted(deps):
            if (_stage(module), _stage(dep)) in FORBIDDEN_STAGES:
                out.append(f"{module} imports {dep}: {_stage(module)} may not import {_stage(dep)}")
            if _stage(dep) == "cli" and _stage(module) not in ENTRY_POINTS:
                out.append(f"{module} imports the CLI ({dep})")
    cycle = find_cycle(graph)
    if cycle:
        out.append("import cycle: " + " -> ".join(cycle))
    out += [f"{where}: library code exits the process" for where in exit_calls(root)]
    return out


def test_the_package_keeps_the_layout_rules():
    root = Path(simclr_watches.__file__).parent
    graph = import_graph(root)
    assert len(graph) > 30 and "simclr_watches.retrieval.embed" in graph["simclr_watches.retrieval.search"]
    assert violations(root) == KNOWN_VIOLATIONS


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    """A fake package ``pkg`` in ``tmp_path``: clean stage modules, then ``files`` (path -> source) over them."""
    root = tmp_path / "pkg"
    clean = {"__init__.py": "", "__main__.py": "from pkg.cli import app\n", "cli.py": "import sys\nfrom pkg.retrieval import search\nsys.exit(0)\n",
             "retrieval/__init__.py": "", "retrieval/search.py": "from pkg.retrieval.index import Index\n",
             "retrieval/index.py": "import numpy\n", "train/__init__.py": "", "train/proxy.py": "from ..retrieval import index\n",
             "evaluation/__init__.py": "", "evaluation/run.py": "from pkg.train import proxy\nfrom . import report\n",
             "evaluation/report.py": "import json\n"}
    for name, source in {**clean, **files}.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(source)
    return root


def test_a_clean_fake_package_keeps_the_rules(tmp_path):
    root = _package(tmp_path, {})
    graph = import_graph(root)
    # Relative imports resolve; "from pkg.retrieval import search" is an import of the submodule.
    assert graph["pkg.train.proxy"] == {"pkg.retrieval.index"} and graph["pkg.cli"] == {"pkg.retrieval.search"}
    assert graph["pkg.evaluation.run"] == {"pkg.train.proxy", "pkg.evaluation.report"}
    assert violations(root) == []


@pytest.mark.parametrize(
    "files, broken",
    [
        ({"retrieval/search.py": "def f():\n    from pkg.train.proxy import x\n"},
         "pkg.retrieval.search imports pkg.train.proxy: retrieval may not import train"),
        ({"retrieval/search.py": "from ..evaluation import report\n"},
         "pkg.retrieval.search imports pkg.evaluation.report: retrieval may not import evaluation"),
        ({"train/proxy.py": "import pkg.evaluation.report as r\n"},
         "pkg.train.proxy imports pkg.evaluation.report: train may not import evaluation"),
        ({"evaluation/report.py": "def main():\n    from pkg import cli\n"}, "pkg.evaluation.report imports the CLI (pkg.cli)"),
        ({"retrieval/index.py": "import pkg.retrieval.search\n"},
         "import cycle: pkg.retrieval.index -> pkg.retrieval.search -> pkg.retrieval.index"),
        ({"train/proxy.py": "import sys\n\ndef stop():\n    sys.exit(2)\n"}, "pkg.train.proxy:4: library code exits the process"),
        ({"serve/__init__.py": "", "serve/app.py": "from pkg.evaluation import report\n"},
         "pkg.serve.app imports pkg.evaluation.report: serve may not import evaluation"),
        ({"serve/__init__.py": "", "serve/app.py": "import json\n",
          "retrieval/index.py": "def f():\n    from pkg.serve import app\n"},
         "pkg.retrieval.index imports pkg.serve.app: retrieval may not import serve"),
        ({"detect/__init__.py": "", "detect/train.py": "def f():\n    from pkg.evaluation.report import x\n"},
         "pkg.detect.train imports pkg.evaluation.report: detect may not import evaluation"),
        ({"detect/__init__.py": "", "detect/infer.py": "from pkg.retrieval import search\n"},
         "pkg.detect.infer imports pkg.retrieval.search: detect may not import retrieval"),
    ],
    ids=["retrieval-train", "retrieval-evaluation", "train-evaluation", "imports-cli", "cycle", "sys-exit",
         "serve-evaluation", "retrieval-serve", "detect-evaluation", "detect-retrieval"],
)
def test_each_rule_fails_when_broken(tmp_path, files, broken):
    assert violations(_package(tmp_path, files)) == [broken]
