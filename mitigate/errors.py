"""The one exception type for bad input: the CLI turns it into one line and exit code 2."""

from __future__ import annotations

__all__ = ["MitigateError", "MitigateWarning", "first_line", "unknown_choice", "warn"]


class MitigateError(ValueError):
    """Bad input from the user: an unknown name, a missing file, a wrong shape.

    Subclasses ``ValueError`` so library users can catch it the usual way; the CLI prints its
    message on one line and exits with code 2.
    """


class MitigateWarning(UserWarning):
    """Something a run did differently from what was asked, or left out, and carried on: a
    shift family that cannot apply to the data, a split that was not given. The CLI prints
    each as one ``warning:`` line."""


def warn(message: str) -> None:
    """Issue a :class:`MitigateWarning` pointing at the caller's caller (the user's code)."""
    import warnings

    warnings.warn(message, MitigateWarning, stacklevel=3)


def unknown_choice(kind: str, name: object, choices: object) -> MitigateError:
    """Build the error for a name that is not in a registry, listing the valid ones.

    Example:
        >>> str(unknown_choice("scheme", "int3", ["int8", "fp16"]))
        "unknown scheme 'int3'; valid choices: int8, fp16"
    """
    valid = ", ".join(str(c) for c in choices)  # type: ignore[attr-defined]
    return MitigateError(f"unknown {kind} {name!r}; valid choices: {valid}")


def first_line(err: BaseException) -> str:
    """The first line of an exception's message (at most 160 characters), for one-line errors
    that quote a failure inside a user's code or file.

    Example:
        >>> first_line(RuntimeError("shape mismatch\\nlong details"))
        'shape mismatch'
    """
    text = str(err).strip()
    return text.splitlines()[0][:160] if text else "no details"
