"""The README and docs/ hold together: a short README, links that land, commands that exist,
speed-ups that were measured.

Fast and torch-free: it reads Markdown and parses ``edgeopt/cli/`` with ``ast`` (the subcommands
are the names given to ``@app.command``), importing nothing of edgeopt. Each test gathers every
problem it finds and names them all in one failure: file, line, and what is wrong.
"""

from __future__ import annotations

import ast
import re
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
CLI = ROOT / "edgeopt" / "cli"
README_MAX_LINES = 200

FENCE = re.compile(r"^\s*(```|~~~)\s*([\w+-]*)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
LINK = re.compile(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")  # [text](target) and ![alt](target)
INLINE_CODE = re.compile(r"(`+)(.+?)\1", re.S)
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")  # http:, https:, mailto: ... : not files
COMMAND = re.compile(r"(?:^|[\s;&|(/])edgeopt[ \t]+([A-Za-z][\w-]*)")
INLINE_COMMAND = re.compile(r"^(?:\$\s+)?edgeopt\s+([A-Za-z][\w-]*)")
SHELL_LANGUAGES = ("bash", "sh", "shell")
SESSION_LANGUAGES = ("", "console", "text")  # blocks that may show commands and what they printed
SPEEDUP = re.compile(r"(?<![\w.,])(\d+(?:[.,]\d+)*)\s*×")


def pages() -> list[Path]:
    """README.md and every page of docs/."""
    return [README, *sorted(DOCS.glob("*.md"))]


def name(path: Path) -> str:
    """``path`` as the repository sees it (relative to its root, where it lies inside)."""
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


class Page:
    """A Markdown file split into prose (code blocks blanked, line numbers kept) and fenced code blocks."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.prose: list[str] = []
        self.blocks: list[tuple[str, int, list[str]]] = []  # (language, first line number, lines)
        fence = None
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            opened = FENCE.match(line)
            if fence is None and opened:
                fence = opened.group(1)
                self.blocks.append((opened.group(2).lower(), number + 1, []))
                self.prose.append("")
            elif fence is not None:
                if line.strip().startswith(fence):
                    fence = None
                else:
                    self.blocks[-1][2].append(line)
                self.prose.append("")
            else:
                self.prose.append(line)

    def prose_text(self, blank_code_spans: bool = False) -> str:
        text = "\n".join(self.prose)
        if blank_code_spans:  # a link inside `code` is not a link; keep newlines so line numbers hold
            text = INLINE_CODE.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), text)
        return text

    def anchors(self) -> set[str]:
        """GitHub's anchors for this page's headings (duplicates get -1, -2, ...)."""
        seen: dict[str, int] = {}
        found = set()
        for line in self.prose:
            heading = HEADING.match(line)
            if heading:
                base = slug(heading.group(2))
                count = seen.get(base, 0)
                seen[base] = count + 1
                found.add(base if count == 0 else f"{base}-{count}")
        return found


def slug(heading: str) -> str:
    """A heading's anchor as GitHub writes it: link targets and markup dropped, lowercase,
    punctuation removed (letters, digits, '_', '-' and spaces kept), spaces as hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # [text](url) -> text
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


@lru_cache(maxsize=None)
def page(path: Path) -> Page:
    return Page(path)


@lru_cache(maxsize=1)
def subcommands() -> frozenset[str]:
    """The names edgeopt/cli/ registers: ``@app.command("name")`` (or the function's name, as typer
    derives it) and ``app.add_typer(..., name="name")``."""
    names = set()
    for source in sorted(CLI.glob("*.py")):
        tree = ast.parse(source.read_text(encoding="utf-8"), filename=str(source))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for decorator in node.decorator_list:
                    if (isinstance(decorator, ast.Call) and isinstance(decorator.func, ast.Attribute)
                            and decorator.func.attr == "command"):
                        names.add(_given_name(decorator) or node.name.replace("_", "-"))
            elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                  and node.func.attr == "add_typer"):
                given = _given_name(node, positional=False)
                if given:
                    names.add(given)
    return frozenset(names)


def _given_name(call: ast.Call, positional: bool = True) -> str | None:
    if positional and call.args and isinstance(call.args[0], ast.Constant) and isinstance(call.args[0].value, str):
        return call.args[0].value
    for keyword in call.keywords:
        if keyword.arg == "name" and isinstance(keyword.value, ast.Constant):
            return keyword.value.value
    return None


def command_lines(language: str, block: list[str]) -> list[tuple[int, str]]:
    """(offset, line) of the lines of a code block that are commands, shell comments dropped: in a
    shell block every line; in a block of output that shows a session (lines starting with "$ "),
    those lines only — the rest is what the commands printed."""
    stripped = [line.lstrip() for line in block]
    session = language in SESSION_LANGUAGES and any(line.startswith("$ ") for line in stripped)
    lines = []
    for offset, line in enumerate(stripped):
        if line.startswith("$ "):
            line = line[2:]
        elif session:
            continue
        lines.append((offset, re.sub(r"(^|\s)#.*$", "", line)))
    return lines


# -- the tests ------------------------------------------------------------------------------------
def test_readme_is_short():
    count = len(README.read_text(encoding="utf-8").splitlines())
    assert count <= README_MAX_LINES, (
        f"README.md has {count} lines, more than {README_MAX_LINES}: move the detail to a page under docs/ "
        "and link it")


def test_every_relative_link_lands_on_a_file_and_heading():
    problems = []
    for path in pages():
        text = page(path).prose_text(blank_code_spans=True)
        for match in LINK.finditer(text):
            target = match.group(1)
            if SCHEME.match(target):
                continue
            where = f"{name(path)}:{line_of(text, match.start())}: link ({target})"
            file_part, _, anchor = target.partition("#")
            resolved = (path.parent / file_part).resolve() if file_part else path
            if not resolved.exists():
                problems.append(f"{where}: no such file {name(resolved)}")
                continue
            if anchor and resolved.suffix == ".md" and anchor not in page(resolved).anchors():
                problems.append(f"{where}: {name(resolved)} has no heading with anchor #{anchor}")
    assert not problems, "broken links in the docs:\n" + "\n".join(problems)


def test_docs_index_and_readme_reach_every_page():
    index = page(DOCS / "index.md").prose_text()
    readme = page(README).prose_text()
    problems = [f"docs/index.md: does not link docs/{doc.name}" for doc in sorted(DOCS.glob("*.md"))
                if doc.name != "index.md" and f"]({doc.name}" not in index]
    if "](docs/index.md)" not in readme:
        problems.append("README.md: does not link docs/index.md")
    assert not problems, "\n".join(problems)


def test_every_edgeopt_command_in_the_docs_exists():
    known = subcommands()
    assert {"optimize", "serve", "stream", "agent"} <= known, (
        f"could not read the subcommands from edgeopt/cli/ (found {sorted(known)}): how are they registered now?")
    problems = []
    for path in pages():
        doc = page(path)
        for language, first, block in doc.blocks:
            if language not in SHELL_LANGUAGES + SESSION_LANGUAGES:
                continue
            for offset, line in command_lines(language, block):
                for match in COMMAND.finditer(line):
                    if match.group(1) not in known:
                        problems.append(f"{name(path)}:{first + offset}: `edgeopt {match.group(1)}` in a code block "
                                        "is not a subcommand")
        text = doc.prose_text()
        for span in INLINE_CODE.finditer(text):
            command = INLINE_COMMAND.match(span.group(2).strip())
            if command and command.group(1) not in known:
                problems.append(f"{name(path)}:{line_of(text, span.start())}: `edgeopt {command.group(1)}` "
                                "is not a subcommand")
    assert not problems, ("commands the CLI does not have (it has: " + ", ".join(sorted(known)) + "):\n"
                          + "\n".join(problems))


def test_every_speedup_in_the_readme_was_measured():
    results = re.sub(r"\s+×", "×", RESULTS.read_text(encoding="utf-8"))
    problems = []
    for number, line in enumerate(README.read_text(encoding="utf-8").splitlines(), start=1):
        for match in SPEEDUP.finditer(line):
            figure = f"{match.group(1)}×"
            if figure not in results:
                problems.append(f"README.md:{number}: {figure} does not appear in benchmarks/RESULTS.md")
    assert not problems, "figures in the README that no benchmark measured:\n" + "\n".join(problems)
