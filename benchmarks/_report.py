"""Shared by the benchmark scripts: machine facts, JSON-lines results, markdown tables."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

RESULTS = Path(__file__).parent / "results"


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


def load_rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def append_row(path: Path, row: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps(row) + "\n")


def table(headers: list[str], rows: list[list]) -> str:
    def fmt(v):
        if isinstance(v, float):
            return f"{v:.4g}" if abs(v) < 1 else f"{v:.2f}"
        return str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def main_with_report(p, run, report, markdown: Path) -> None:
    """Parse ``p`` (given --report-only here), ``run(args)`` unless only reporting, then write
    ``report()`` to ``markdown`` and print it."""
    p.add_argument("--report-only", action="store_true", help="rewrite the table from the stored rows")
    args = p.parse_args()
    if not args.report_only:
        run(args)
    text = report()
    markdown.write_text(text + "\n")
    print(text)
