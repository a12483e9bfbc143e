"""The one exception type for bad input: the CLI turns it into one line and exit code 2."""

from __future__ import annotations

__all__ = ["MitigateError", "unknown_choice"]


class MitigateError(ValueError):
    """Bad input from the user: an unknown name, a missing file, a wrong shape.

    Subclasses ``ValueError`` so library users can catch it the usual way; the CLI prints its
    message on one line and exits with code 2.
    """


def unknown_choice(kind: str, name: object, choices: object) -> MitigateError:
    """Build the error for a name that is not in a registry, listing the valid ones.

    Example:
        >>> str(unknown_choice("scheme", "int3", ["int8", "fp16"]))
        "unknown scheme 'int3'; valid choices: int8, fp16"
    """
    valid = ", ".join(str(c) for c in choices)  # type: ignore[attr-defined]
    return MitigateError(f"unknown {kind} {name!r}; valid choices: {valid}")
