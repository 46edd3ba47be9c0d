"""The resilience suite's table (``make test-resilience`` prints it after the run): per fault,
events sent / stored / lost / duplicated, wrong profiles, memberships and passes, new dead
letters,
recovery time and the time to drain after the last event was accepted, from the JSON lines
the runs wrote under ``.resilience/``."""

from __future__ import annotations

import json
from pathlib import Path

from infra.local.stack import ROOT

RESULTS = ROOT / ".resilience"
COLUMNS = (
    "fault",
    "sent",
    "stored",
    "lost",
    "duplicated",
    "wrong_profiles",
    "wrong_memberships",
    "wrong_passes",
    "dead_letters_new",
    "recovery_s",
    "drain_s",
)


def rows(folder: Path) -> list[dict[str, object]]:
    """Every result line written by the runs, in the order written."""
    found: list[dict[str, object]] = []
    for path in sorted(folder.glob("*.jsonl")):
        found += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return found


def table(results: list[dict[str, object]]) -> str:
    """A Markdown table of ``results`` with a totals line."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in results:
        lines.append("| " + " | ".join(str(row.get(c, "")) for c in COLUMNS) + " |")
    survived = sum(
        1
        for r in results
        if all(
            r.get(k, 0) == 0
            for k in (
                "lost",
                "duplicated",
                "wrong_profiles",
                "wrong_memberships",
                "wrong_passes",
                "dead_letters_new",
            )
        )
    )
    lines.append(f"\nfaults survived with exact data: {survived} of {len(results)}")
    return "\n".join(lines)


def main() -> None:
    """Print the table of the last run."""
    results = rows(RESULTS)
    print(table(results) if results else "no resilience results found under .resilience/")


if __name__ == "__main__":
    main()
