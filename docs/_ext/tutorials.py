"""Sphinx extension: render ``tutorials/*.py`` (jupytext percent format) as MyST pages.

At ``builder-inited`` every tutorial becomes ``docs/tutorials/<name>.md``: markdown cells as
text, code cells as ``python`` code blocks. Nothing is executed; the tutorials run in the test
suite (``tests/test_tutorials.py``). Generated pages are not committed (``docs/.gitignore``).
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["percent_to_myst", "setup", "write_pages"]


def _cells(text: str) -> list[tuple[str, list[str]]]:
    """``(kind, lines)`` for each cell; kind is ``'markdown'`` or ``'code'``."""
    cells: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        if line.startswith("# %%"):
            kind = "markdown" if "[markdown]" in line else "code"
            cells.append((kind, []))
        elif cells:
            cells[-1][1].append(line)
        elif line.strip():
            cells.append(("code", [line]))  # code before the first marker
    return cells


def _strip_blank(lines: list[str]) -> list[str]:
    start, end = 0, len(lines)
    while start < end and not lines[start].strip():
        start += 1
    while end > start and not lines[end - 1].strip():
        end -= 1
    return lines[start:end]


def _uncomment(line: str) -> str:
    if line.startswith("# "):
        return line[2:]
    return "" if line.strip() == "#" else line


def percent_to_myst(text: str) -> str:
    """MyST markdown for a percent-format notebook: text cells as text, code in fences."""
    blocks = []
    for kind, lines in _cells(text):
        lines = _strip_blank(lines)
        if not lines:
            continue
        if kind == "markdown":
            blocks.append("\n".join(_uncomment(line) for line in lines))
        else:
            blocks.append("```python\n" + "\n".join(lines) + "\n```")
    return "\n\n".join(blocks) + "\n"


def write_pages(source: Path, target: Path) -> list[Path]:
    """Write one page per ``source/*.py`` into ``target``; stale generated pages are removed."""
    target.mkdir(parents=True, exist_ok=True)
    for old in target.glob("[0-9]*.md"):
        old.unlink()
    written = []
    for path in sorted(source.glob("*.py")):
        page = percent_to_myst(path.read_text(encoding="utf-8"))
        title, _, rest = page.partition("\n")
        note = (
            f"\n\n```{{note}}\nThis page is `tutorials/{path.name}` of the repository, a jupytext "
            "percent-format notebook. Run it from the repository root with "
            f"`python tutorials/{path.name}`, or open it in Jupyter with jupytext. The test "
            "suite runs it on every change.\n```\n"
        )
        out = target / f"{path.stem}.md"
        out.write_text(title + note + rest, encoding="utf-8")
        written.append(out)
    return written


def _on_builder_inited(app) -> None:
    docs = Path(app.srcdir)
    write_pages(docs.parent / "tutorials", docs / "tutorials")


def setup(app):
    """Register the page generation with Sphinx."""
    app.connect("builder-inited", _on_builder_inited)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
