"""Which package may import which: the model clients (`bot/llm/`) sit under the
dialogue (`bot/dialogue/` calls models, never the other way round).

Read from the source (every import statement, including those inside functions and
under TYPE_CHECKING), so a forbidden import fails here before anyone runs it.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def imports_of(path: Path, root: Path) -> set[str]:
    """The modules `path` imports (absolute names; a relative import made absolute)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = list(path.relative_to(root).with_suffix("").parts[:-1])
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            parts = package[: len(package) - node.level + 1] if node.level else []
            base = ".".join([*parts, *([node.module] if node.module else [])])
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def offenders(root: Path, package: str, forbidden: str) -> dict[str, list[str]]:
    """{file: the forbidden modules it imports} for every file of `package` under `root`."""
    out: dict[str, list[str]] = {}
    for path in sorted((root / package).rglob("*.py")):
        bad = [
            m
            for m in sorted(imports_of(path, root))
            if m == forbidden or m.startswith(forbidden + ".")
        ]
        if bad:
            out[path.relative_to(root).as_posix()] = bad
    return out


def test_nothing_in_bot_llm_imports_the_dialogue() -> None:
    assert offenders(ROOT, "bot/llm", "bot.dialogue") == {}


def test_the_check_finds_each_kind_of_import(tmp_path: Path) -> None:
    """The check itself can fail: a plain, a from-, a relative and a function's import."""
    llm = tmp_path / "bot" / "llm"
    llm.mkdir(parents=True)
    (llm / "ok.py").write_text("import bot.llm.base\nfrom bot import metrics\n")
    (llm / "plain.py").write_text("import bot.dialogue.models\n")
    (llm / "from_.py").write_text("from bot.dialogue.profiles import personas\n")
    (llm / "relative.py").write_text("from ..dialogue import models\n")
    (llm / "inner.py").write_text("def f():\n    from bot.dialogue import engine\n")
    assert offenders(tmp_path, "bot/llm", "bot.dialogue") == {
        "bot/llm/from_.py": ["bot.dialogue.profiles", "bot.dialogue.profiles.personas"],
        "bot/llm/inner.py": ["bot.dialogue", "bot.dialogue.engine"],
        "bot/llm/plain.py": ["bot.dialogue.models"],
        "bot/llm/relative.py": ["bot.dialogue", "bot.dialogue.models"],
    }
