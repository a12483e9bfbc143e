"""Find a user's callable from a ``pkg.module:name`` string: a model factory or a dataset
function named on the command line or in a config."""

from __future__ import annotations

import hashlib
import importlib
import inspect
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mitigate.errors import MitigateError, first_line

__all__ = ["is_callable_spec", "resolve_callable", "source_digest"]

_SPEC = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*$")


def is_callable_spec(text: str) -> bool:
    """Whether ``text`` has the form ``pkg.module:name``. ``npz:data.npz`` has it too, so
    callers check their own ``kind:PATH`` prefixes first.

    Example:
        >>> is_callable_spec("examples.own_model:build"), is_callable_spec("my_model.pt")
        (True, False)
    """
    return bool(_SPEC.match(text))


def resolve_callable(spec: str, what: str) -> Callable[..., Any]:
    """The callable ``spec`` names, imported the way ``python -c "import pkg.module"`` would
    from the current folder.

    Args:
        spec: ``"pkg.module:name"`` (``name`` may be dotted: ``module:Class.method``).
        what: what the callable is for, for error messages (``"model factory"``).

    Raises:
        MitigateError: a malformed spec, a module that cannot be imported (naming the missing
            module), a missing attribute or one that is not callable.

    Example:
        >>> resolve_callable("math:sqrt", "function")(9.0)
        3.0
    """
    if not is_callable_spec(spec):
        raise MitigateError(f"{what} {spec!r} must look like pkg.module:name")
    module_name, _, attribute = spec.partition(":")
    if "" not in sys.path and str(Path.cwd()) not in sys.path:
        sys.path.insert(0, "")  # the console script's path lacks the current folder
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        raise MitigateError(
            f"cannot import {what} {spec!r}: no module named {err.name!r} "
            "(run from the folder that holds it, or install it)"
        ) from None
    except Exception as err:  # the user's module failed while importing
        raise MitigateError(
            f"cannot import {what} {spec!r}: importing {module_name} raised "
            f"{type(err).__name__}: {first_line(err)}"
        ) from None
    target: Any = module
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise MitigateError(f"{what} {spec!r}: module {module_name} has no {attribute!r}")
        target = getattr(target, part)
    if not callable(target):
        raise MitigateError(f"{what} {spec!r} is a {type(target).__name__}, not callable")
    return target


def source_digest(target: Callable[..., Any]) -> str:
    """A short digest of the source file that defines ``target``: part of a cache key, so a
    model cached from a factory is retrained when the factory's code changes."""
    try:
        path = inspect.getsourcefile(inspect.unwrap(target))
        data = Path(path).read_bytes() if path else b""
    except (TypeError, OSError):  # built-in or generated: fall back on its qualified name
        data = b""
    name = f"{getattr(target, '__module__', '')}.{getattr(target, '__qualname__', '')}"
    return hashlib.sha256(name.encode() + b"\0" + data).hexdigest()[:16]
