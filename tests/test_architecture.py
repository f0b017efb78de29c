"""docs/architecture.md names every module of src/chatlens/, and only those."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "chatlens"
PAGE = ROOT / "docs" / "architecture.md"


def documented_modules(page: str) -> set[str]:
    """The modules the Layout block names, as paths under src/chatlens/: a line ending a
    name with "/" opens a folder for the lines indented below it."""
    block = page.split("## Layout", 1)[1].split("```", 2)[1]
    folders: list[tuple[int, str]] = []
    found: set[str] = set()
    for line in block.splitlines():
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        while folders and folders[-1][0] >= indent:
            folders.pop()
        parent = folders[-1][1] if folders else ""
        first = line.split()[0]
        if first.endswith("/"):
            folders.append((indent, parent + first))
            continue
        found |= {parent + word for word in line.split() if word.endswith(".py")}
    prefix = "src/chatlens/"
    return {name.removeprefix(prefix) for name in found}


def modules() -> set[str]:
    return {
        str(path.relative_to(SRC))
        for path in SRC.rglob("*.py")
        if path.name != "__init__.py" and "migrations" not in path.parts
    }


def test_the_layout_names_every_module_and_no_other() -> None:
    named = documented_modules(PAGE.read_text(encoding="utf-8"))
    actual = modules()
    assert not actual - named, f"modules missing from docs/architecture.md: {actual - named}"
    assert not named - actual, f"docs/architecture.md names no such module: {named - actual}"


def test_the_reader_sees_a_missing_module() -> None:
    page = "## Layout\n\n```\nsrc/chatlens/\n  app.py  x\n  chat/\n    router.py  y\n```\n"
    assert documented_modules(page) == {"app.py", "chat/router.py"}
