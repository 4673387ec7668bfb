"""Draw the house plan from the code: which rooms (packages) import which, as Mermaid pictures.

    python tools/house_plan.py --write    # refresh the pictures in docs/architecture.md
    python tools/house_plan.py --check    # exit 1 if they are stale (the test suite runs this)

The arrows come from the imports themselves (grimp, the import graph behind import-linter; imports
made only for type annotations are left out), so the pictures cannot drift from the code. The
rules the arrows must follow are the import-linter contracts in pyproject.toml.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "architecture.md"
#: Modules too small or too basic to draw: everything may use them.
UNDRAWN = {"fermion", "fermion._version", "fermion.__main__", "fermion.extras", "fermion.platform.errors"}


def room(module: str, inside: str | None) -> str | None:
    """The room a module belongs to: a package under `fermion` (or under `inside`, for a closer look)."""
    parts = module.split(".")
    if inside is None:
        name = ".".join(parts[:2])
    elif module.startswith(inside + "."):
        name = ".".join(parts[: inside.count(".") + 2])
    else:
        return None
    return None if name in UNDRAWN else name


def arrows(inside: str | None) -> Counter[tuple[str, str]]:
    """(importer room, imported room) → how many module-to-module imports make that arrow."""
    import grimp

    graph = grimp.build_graph("fermion", exclude_type_checking_imports=True, cache_dir=None)  # never a stale cache
    found: Counter[tuple[str, str]] = Counter()
    for module in graph.modules:
        source = room(module, inside)
        if source is None:
            continue
        for imported in graph.find_modules_directly_imported_by(module):
            target = room(imported, inside)
            if target is not None and target != source:
                found[(source, target)] += 1
    return found


def mermaid(inside: str | None) -> str:
    """A Mermaid flowchart of the rooms and their arrows, top to bottom."""
    found = arrows(inside)
    prefix = (inside or "fermion") + "."
    short = {name: name.removeprefix(prefix) for pair in found for name in pair}
    lines = ["```mermaid", "flowchart TD"]
    for name in sorted(short.values()):
        lines.append(f"    {name.replace('.', '_')}[{name}]")
    for source, target in sorted(found):
        lines.append(f"    {short[source].replace('.', '_')} --> {short[target].replace('.', '_')}")
    lines.append("```")
    return "\n".join(lines)


def render(page: str) -> str:
    """`page` with each picture between its markers redrawn."""
    for inside in (None, "fermion.platform"):
        key = inside or "fermion"
        begin, end = f"<!-- house-plan:{key}:begin -->", f"<!-- house-plan:{key}:end -->"
        head, found, rest = page.partition(begin)
        if not found:
            raise SystemExit(f"{PAGE} has no {begin} marker")
        _, found, tail = rest.partition(end)
        if not found:
            raise SystemExit(f"{PAGE} has no {end} marker")
        page = f"{head}{begin}\n{mermaid(inside)}\n{end}{tail}"
    return page


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="rewrite the pictures in docs/architecture.md")
    parser.add_argument("--check", action="store_true", help="exit 1 if the pictures are stale")
    args = parser.parse_args()
    current = PAGE.read_text()
    fresh = render(current)
    if args.write:
        PAGE.write_text(fresh)
        return 0
    if args.check and fresh != current:
        print(f"{PAGE.relative_to(ROOT)} is stale: run python tools/house_plan.py --write", file=sys.stderr)
        return 1
    if not args.check:
        print(fresh)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
