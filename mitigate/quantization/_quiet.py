"""Keep torch.ao's deprecation chatter out of the user's terminal.

torch 2.13 still runs ``torch.ao.quantization`` (eager, FX, dynamic, QAT) but warns on import,
on every ``prepare``/``convert`` and on every observer built with ``reduce_range``. Those
warnings say nothing a ``mitigate`` user can act on, so every backend call runs inside
:func:`quiet_backend`; nothing is filtered outside it.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["quiet_backend"]

_MESSAGES = (
    r"torch\.ao\.quantization is deprecated",
    r"Please use quant_min and quant_max",
    r"torch\.quantize_per_tensor, torch\.quantize_per_channel",
    r"must run observer before calling calculate_qparams",
    r"_aminmax is deprecated",
    r".*quantized.*deprecated",
)


@contextmanager
def quiet_backend() -> Iterator[None]:
    """Run the enclosed torch.ao calls with their known deprecation warnings silenced."""
    with warnings.catch_warnings():
        for message in _MESSAGES:
            warnings.filterwarnings("ignore", message=message)
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.ao\..*")
        yield
