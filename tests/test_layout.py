"""The package's shape: imports point only downward, rooms stay small.

Every module's imports (including those inside functions) are read with
``ast`` and resolved to psi_share modules; a module may import from its own
layer or a layer below, never from one above. The sans-IO protocols import
neither the store nor the audit. No module is over 600 lines (generated
code aside) and no folder holds more than 12 modules, so that the next
capability gets a room of its own.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "psi_share"

# Top to bottom. A module belongs to the first entry its dotted name starts with.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("psi_share.cli",),
    ("psi_share.jobs",),
    ("psi_share.node",),
    ("psi_share.transport",),
    ("psi_share.protocols",),
    ("psi_share.audit",),
    ("psi_share.store", "psi_share.privacy"),  # privacy: pure noise, and the ledger it keeps in the store
    (
        "psi_share.crypto", "psi_share.identifiers", "psi_share.errors", "psi_share.names", "psi_share.events",
        "psi_share.timefmt", "psi_share.pki", "psi_share.crl", "psi_share.v1", "psi_share.prompts",
    ),
)
MAX_LINES = 600
GENERATED = "psi_share.v1"
MAX_MODULES_PER_FOLDER = 12


def _modules(root: Path) -> dict[str, Path]:
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _layer(module: str) -> int | None:
    for index, prefixes in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return index
    return None  # the package root: the public API, above everything


def _imports(module: str, path: Path, known: set[str]) -> list[tuple[int, str]]:
    """(line, imported psi_share module) for every import in ``path``."""
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found: set[tuple[int, str]] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {(node.lineno, a.name) for a in node.names if a.name.startswith("psi_share")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("psi_share"):
                continue
            for alias in node.names:
                if alias.name == "__version__":
                    continue  # the version string, not the API the root re-exports
                sub = f"{target}.{alias.name}"
                found.add((node.lineno, sub if sub in known else target))
    return sorted(found)


def layout_problems(root: Path) -> list[str]:
    modules = _modules(root)
    known = set(modules)
    problems = []
    for module, path in modules.items():
        here = _layer(module)
        for line, imported in _imports(module, path, known):
            there = _layer(imported)
            where = f"{path.relative_to(root.parent)}:{line}"
            if here is not None and (there is None or there < here):
                problems.append(f"{where}: {module} imports {imported}, a layer above it")
            if module.startswith("psi_share.protocols") and imported.split(".")[1] in ("store", "audit"):
                problems.append(f"{where}: the sans-IO protocols import {imported}")
        lines = len(path.read_text().splitlines())
        # Generated code (psi_share/v1, from protos/ by scripts/gen_protos.py) grows with
        # the wire contract, about 45 lines per RPC; nobody reads or edits it.
        if lines > MAX_LINES and not module.startswith(GENERATED):
            problems.append(f"{path.relative_to(root.parent)} has {lines} lines (at most {MAX_LINES})")
    for folder in sorted({p.parent for p in modules.values()}):
        count = len(list(folder.glob("*.py")))
        if count > MAX_MODULES_PER_FOLDER:
            problems.append(f"{folder.relative_to(root.parent)}/ holds {count} modules (at most {MAX_MODULES_PER_FOLDER})")
    return problems


def test_imports_point_down_and_rooms_stay_small() -> None:
    assert layout_problems(PACKAGE) == []


@pytest.mark.parametrize(
    ("module", "source", "problem"),
    [
        ("protocols/bad.py", "from ..store.db import Store\n", "the sans-IO protocols import psi_share.store.db"),
        ("audit/bad.py", "from ..transport.egress import Egress\n", "a layer above it"),
        ("node/bad.py", "def f():\n    from psi_share.jobs import runner\n", "a layer above it"),
        ("store/bad.py", "x = 1\n" * 601, "601 lines"),
    ],
    ids=["protocols-import-store", "audit-imports-transport", "node-imports-jobs-in-a-function", "long-module"],
)
def test_the_layout_check_catches(tmp_path: Path, module: str, source: str, problem: str) -> None:
    root = tmp_path / "psi_share"
    for name in ("", "protocols", "audit", "node", "store", "transport", "jobs"):
        (root / name).mkdir(parents=True, exist_ok=True)
        (root / name / "__init__.py").write_text("")
    (root / "store" / "db.py").write_text("class Store: ...\n")
    (root / "transport" / "egress.py").write_text("class Egress: ...\n")
    (root / "jobs" / "runner.py").write_text("")
    (root / module).write_text(source)
    assert any(problem in p for p in layout_problems(root)), layout_problems(root)


def test_a_crowded_folder_is_caught(tmp_path: Path) -> None:
    root = tmp_path / "psi_share"
    (root / "node").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    for i in range(13):
        (root / "node" / f"m{i}.py").write_text("")
    assert layout_problems(root) == ["psi_share/node/ holds 13 modules (at most 12)"]


def test_no_validating_pattern_lets_a_trailing_newline_through() -> None:
    """``$`` in a Python regex also matches before a final newline: "lab-a\\n" passed the
    name rule. Every anchored validation pattern ends with ``\\Z`` instead."""
    import re as re_module

    from psi_share.errors import StoreError
    from psi_share.names import NAME_PATTERN, check_name
    from psi_share.transport.egress import SESSION_ID

    assert NAME_PATTERN.match("lab-a") and not NAME_PATTERN.match("lab-a\n")
    assert not SESSION_ID.match("0" * 32 + "\n")
    with pytest.raises(StoreError):
        check_name("dataset", "flagged\n")
    lax = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if "/v1/" in str(path):
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if re_module.search(r're\.compile\(r"\^.*\$"\)', line):
                lax.append(f"{path.relative_to(PACKAGE.parent)}:{n}")
    assert not lax, lax
