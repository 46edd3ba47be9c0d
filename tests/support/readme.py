"""README.md as the README tests read it: its fenced code blocks, inline code spans and
Markdown tables, each with the line it starts on (so a failure points at the text to fix)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
FENCE = re.compile(r"^```(\S*)\s*$")
INLINE_CODE = re.compile(r"`([^`\n]+)`")


@dataclass(frozen=True)
class CodeBlock:
    """A fenced block: its language tag (empty when none), first line number and lines."""

    language: str
    line: int
    lines: tuple[str, ...]


@dataclass(frozen=True)
class Table:
    """A Markdown table: the header cells (lower-cased) and each row with its line number."""

    line: int
    header: tuple[str, ...]
    rows: tuple[tuple[int, tuple[str, ...]], ...]


def readme_text() -> str:
    """The README as committed in this checkout."""
    return README.read_text(encoding="utf-8")


def code_blocks(text: str) -> list[CodeBlock]:
    """Every fenced code block, in order."""
    blocks: list[CodeBlock] = []
    language: str | None = None
    start, body = 0, list[str]()
    for number, line in enumerate(text.splitlines(), 1):
        fence = FENCE.match(line)
        if language is None and fence is not None:
            language, start, body = fence.group(1).lower(), number + 1, []
        elif language is not None and line.strip() == "```":
            blocks.append(CodeBlock(language, start, tuple(body)))
            language = None
        elif language is not None:
            body.append(line)
    return blocks


def prose_lines(text: str) -> list[tuple[int, str]]:
    """The lines outside fenced code blocks, with their numbers."""
    inside = False
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            inside = not inside
            continue
        if not inside:
            found.append((number, line))
    return found


def inline_code(text: str) -> list[tuple[int, str]]:
    """Every inline code span outside code blocks (table cells included), with its line."""
    return [(n, span) for n, line in prose_lines(text) for span in INLINE_CODE.findall(line)]


def split_row(line: str) -> tuple[str, ...]:
    """The cells of a table row (pipes inside code spans, as in `a|b`, stay in their cell)."""
    cells, current, in_code = [], "", False
    for char in line.strip().strip("|"):
        if char == "`":
            in_code = not in_code
        if char == "|" and not in_code:
            cells.append(current.strip())
            current = ""
        else:
            current += char
    cells.append(current.strip())
    return tuple(cells)


def tables(text: str) -> list[Table]:
    """Every Markdown table outside code blocks."""
    found: list[Table] = []
    lines = prose_lines(text)
    index = 0
    while index < len(lines) - 1:
        number, line = lines[index]
        separator = lines[index + 1][1]
        if line.startswith("|") and re.fullmatch(r"\|(\s*:?-+:?\s*\|)+", separator.strip()):
            header = tuple(cell.lower() for cell in split_row(line))
            rows = []
            index += 2
            while index < len(lines) and lines[index][1].startswith("|"):
                rows.append((lines[index][0], split_row(lines[index][1])))
                index += 1
            found.append(Table(number, header, tuple(rows)))
        else:
            index += 1
    return found
