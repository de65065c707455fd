"""`--layers` for imports: patterns over layer names and blocks.

A pattern is a glob (`fnmatch`: `*`, `?`, `[...]`), as in `layer4.*` or `features.1[0-2].*`,
or, written `re:...`, a regular expression that must match the whole name
(`re:layer[34]\\.1\\..*`). A layer is chosen when a pattern matches its name or its group
(its block), so `layer4.1` chooses every layer of that block. A pattern that matches
nothing is refused, naming the layers there are.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Mapping, Sequence

from .errors import ExportError

REGEX_PREFIX = "re:"


def matcher(pattern: str) -> Callable[[str], bool]:
    if pattern.startswith(REGEX_PREFIX):
        try:
            compiled = re.compile(pattern[len(REGEX_PREFIX):])
        except re.error as exc:
            raise ExportError(f"--layers pattern {pattern!r} is not a valid regular expression: {exc}") from None
        return lambda name: compiled.fullmatch(name) is not None
    return lambda name: fnmatch.fnmatchcase(name, pattern)


def select(names: Sequence[str], groups: Mapping[str, str | None], patterns: Sequence[str]) -> set[str]:
    """The names any pattern matches (by name or by group); every pattern must match one."""
    chosen: set[str] = set()
    for pattern in patterns:
        matches = matcher(pattern)
        found = {n for n in names if matches(n) or (groups.get(n) is not None and matches(groups[n] or ""))}
        if not found:
            blocks = sorted({g for g in groups.values() if g}, key=list(groups.values()).index)
            where = f"; blocks: {', '.join(blocks)}" if blocks else ""
            raise ExportError(f"--layers pattern {pattern!r} matches no layer (globs like 'layer4.*', or "
                              f"'re:REGEX'); layers: {', '.join(names)}{where}")
        chosen |= found
    return chosen
