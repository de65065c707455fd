#!/usr/bin/env python3
"""Print the requirements of convscope's pyproject.toml, one per line, for `pip install -r`.

The images install the dependencies in a layer of their own, before the code is copied,
so that a code edit does not reinstall them. pyproject.toml stays the one place where
versions are written: this script only reads it.

    pyproject-deps.py [--pyproject FILE] [--only a,b] [--exclude a,b] EXTRA...

The base dependencies are always included; each EXTRA adds its list, and self-references
such as "convscope[web]" are expanded. --only / --exclude filter by distribution name.
"""
from __future__ import annotations

import argparse
import re
import sys
import tomllib


def _name(req: str) -> str:
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", req)
    if not match:
        raise SystemExit(f"pyproject-deps: cannot read a name in {req!r}")
    return re.sub(r"[-_.]+", "-", match.group(1)).lower()


def requirements(project: dict, extras: list[str]) -> list[str]:
    own = _name(project["name"])
    optional = project.get("optional-dependencies", {})
    out: list[str] = []
    seen_extras: set[str] = set()

    def add(reqs: list[str]) -> None:
        for req in reqs:
            if _name(req) == own:
                inner = re.search(r"\[([^\]]*)\]", req)
                for extra in (inner.group(1).split(",") if inner else []):
                    add_extra(extra.strip())
            elif req not in out:
                out.append(req)

    def add_extra(extra: str) -> None:
        if extra in seen_extras:
            return
        if extra not in optional:
            raise SystemExit(f"pyproject-deps: no extra {extra!r} in pyproject.toml "
                             f"(have: {', '.join(sorted(optional))})")
        seen_extras.add(extra)
        add(optional[extra])

    add(project.get("dependencies", []))
    for extra in extras:
        add_extra(extra)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("extras", nargs="*")
    parser.add_argument("--pyproject", default="pyproject.toml")
    parser.add_argument("--only", default="", help="comma list of names to keep")
    parser.add_argument("--exclude", default="", help="comma list of names to drop")
    args = parser.parse_args(argv)
    with open(args.pyproject, "rb") as f:
        project = tomllib.load(f)["project"]
    only = {_name(n) for n in args.only.split(",") if n.strip()}
    exclude = {_name(n) for n in args.exclude.split(",") if n.strip()}
    reqs = [r for r in requirements(project, args.extras)
            if (not only or _name(r) in only) and _name(r) not in exclude]
    if only and len({_name(r) for r in reqs}) != len(only):
        missing = only - {_name(r) for r in reqs}
        raise SystemExit(f"pyproject-deps: not required by pyproject.toml: {', '.join(sorted(missing))}")
    sys.stdout.write("".join(r + "\n" for r in reqs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
