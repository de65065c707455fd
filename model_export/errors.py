"""The one exception type the CLI turns into `error: ...` and exit code 2."""

from __future__ import annotations


class ExportError(Exception):
    """A problem with the user's input (arguments, data, weights, ONNX file).

    The CLI prints it as a single `error: ...` line and exits with status 2, so the
    message must make sense on its own and name what to fix.
    """

    def __str__(self) -> str:
        # Multi-line messages (e.g. wrapped library errors) would break the
        # one-line promise of the CLI, so they are folded here once for all callers.
        return " ".join(str(super().__str__()).split())
