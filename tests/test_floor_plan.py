"""The tests keep a floor plan of their own: each test module stands alone, sharing only what is in
tests/support/ and the fixtures of tests/conftest.py, and sits in the folder of the floor it tests
(this module alone checks the whole). The code's floors are checked by `lint-imports`."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.support.paths import ROOT

TESTS = ROOT / "tests"
FLOORS = {
    "api", "chaos", "commands", "consumers", "deploy", "devkit", "ingest", "outbox", "recovery",
    "schemas", "sluice",
}  # fmt: skip


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def test_no_test_module_imports_another_and_support_imports_no_test() -> None:
    offenders = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in sorted(TESTS.rglob("*.py"))
        for name in sorted(imported_modules(path))
        if name.startswith("tests.") and name.rsplit(".", 1)[-1].startswith("test_")
    ]
    assert offenders == []


def test_every_test_module_sits_in_a_floor_folder() -> None:
    misplaced = [
        str(path.relative_to(ROOT))
        for path in sorted(TESTS.rglob("test_*.py"))
        if path.relative_to(TESTS).parts[0] not in FLOORS and path != Path(__file__)
    ]
    assert misplaced == []
    assert {path.name for path in TESTS.iterdir() if path.is_dir()} >= FLOORS | {"support"}
