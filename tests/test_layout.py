"""The package's layout keeps its promises: a core that imports no chapter, modules of one concern named by their
first line, none over 500 lines."""

import ast
from pathlib import Path

import ftkit

PACKAGE = Path(ftkit.__file__).parent
MODULES = sorted(PACKAGE.rglob("*.py"))


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):  # imports inside functions count too
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module if node.level == 0 else f"(relative) {node.module}")
    return names


def test_the_core_imports_no_chapter_and_no_tool():
    core = [p for p in MODULES if p.parent.name == "core"]
    assert len(core) > 10
    reaching = {p.name: sorted(m for m in imported_modules(p) if m.startswith(("ftkit.chapters", "ftkit.tools")))
                for p in core}
    assert {name: mods for name, mods in reaching.items() if mods} == {}


def test_every_module_names_its_concern_and_stays_under_500_lines():
    for path in MODULES:
        docstring = ast.get_docstring(ast.parse(path.read_text()))
        assert docstring and len(docstring.splitlines()[0]) > 20, f"{path.relative_to(PACKAGE)}: no first line"
        assert len(path.read_text().splitlines()) <= 500, f"{path.relative_to(PACKAGE)} is over 500 lines"
