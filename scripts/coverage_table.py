"""Print the test run's line coverage of `panel/` per package, list the modules no test ran at all, and fail under
a floor (CI: .ci/run). Reads the combined `.coverage` data file pytest-cov leaves in the repository.

    python scripts/coverage_table.py [--data .coverage] [--fail-under 80]
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Lines:
    statements: int = 0
    missed: int = 0

    @property
    def covered(self) -> int:
        return self.statements - self.missed

    @property
    def percent(self) -> float:
        return 100.0 * self.covered / self.statements if self.statements else 100.0


def package_of(module: Path) -> str:
    """panel/engines/vllm/engine.py → panel/engines/vllm; panel/app.py → panel."""
    return str(module.parent)


def measure(data_file: Path) -> tuple[dict[str, Lines], list[str]]:
    """Lines per package over every module under panel/ (modules no test imported count as wholly missed)."""
    import coverage

    cov = coverage.Coverage(data_file=str(data_file), config_file=str(REPO / "pyproject.toml"))
    cov.load()
    measured = {Path(f).resolve() for f in cov.get_data().measured_files()}
    packages: dict[str, Lines] = defaultdict(Lines)
    never: list[str] = []
    for path in sorted((REPO / "panel").rglob("*.py")):
        relative = path.relative_to(REPO)
        _, statements, _, missing, _ = cov.analysis2(str(path))
        if not statements:
            continue
        lines = packages[package_of(relative)]
        lines.statements += len(statements)
        lines.missed += len(statements) if path.resolve() not in measured else len(missing)
        if path.resolve() not in measured and relative.name != "__main__.py":
            never.append(str(relative))
    return packages, never


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=REPO / ".coverage")
    parser.add_argument("--fail-under", type=float, default=0.0, help="the floor for panel/ as a whole, in percent")
    args = parser.parse_args(argv)
    if not args.data.is_file():
        print(f"no coverage data at {args.data}: run pytest with --cov=panel first", file=sys.stderr)
        return 2
    packages, never = measure(args.data)
    total = Lines(sum(p.statements for p in packages.values()), sum(p.missed for p in packages.values()))
    width = max(len(name) for name in packages)
    print(f"\n{'package':<{width}}  {'lines':>6}  {'missed':>6}  {'cover':>6}")
    for name, lines in sorted(packages.items()):
        print(f"{name:<{width}}  {lines.statements:>6}  {lines.missed:>6}  {lines.percent:>5.1f}%")
    print(f"{'panel/ (all)':<{width}}  {total.statements:>6}  {total.missed:>6}  {total.percent:>5.1f}%")
    if never:
        print(f"\nmodules no test ran ({len(never)}): " + ", ".join(never))
    if total.percent < args.fail_under:
        print(f"\ncoverage {total.percent:.1f}% is under the floor of {args.fail_under:.1f}%", file=sys.stderr)
        return 1
    if never:
        print("\nevery module of panel/ must be run by some test", file=sys.stderr)
        return 1
    print(f"\ncoverage {total.percent:.1f}% (floor {args.fail_under:.1f}%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
