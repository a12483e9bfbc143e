"""Counter-based, stateless random numbers, so a shifted image never depends on its batch.

Every draw is a hash of ``(seed, family name, dataset index, label, element position)``: the
same image gets the same noise whether it is shifted alone, in a batch of 10,000, or on another
day. The hash is Chris Wellons' ``lowbias32`` integer mixer, computed in ``int64`` tensors on
values below ``2**32``; multiplications are split into 16-bit halves so nothing ever overflows
(signed overflow would be undefined behaviour in the C++ kernels underneath).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["ImageRandom", "image_keys", "mix32", "mix32_int"]

_MASK32 = 0xFFFFFFFF
_MUL_A = 0x7FEB352D
_MUL_B = 0x846CA68B
_GOLDEN = 0x9E3779B9  # odd constant that separates the index halves
_TWO_PI = 2.0 * math.pi


def mix32_int(x: int) -> int:
    """``lowbias32`` on a Python int (taken modulo ``2**32``); equals :func:`mix32` elementwise.

    Example:
        >>> mix32_int(0), mix32_int(1) != mix32_int(2)
        (0, True)
    """
    x &= _MASK32
    x ^= x >> 16
    x = (x * _MUL_A) & _MASK32
    x ^= x >> 15
    x = (x * _MUL_B) & _MASK32
    x ^= x >> 16
    return x


def _mul32(x: Tensor, c: int) -> Tensor:
    # (x * c) mod 2**32 for 0 <= x < 2**32: both partial products stay below 2**49.
    lo, hi = c & 0xFFFF, c >> 16
    return (x * lo + (((x * hi) & 0xFFFF) << 16)) & _MASK32


def mix32(x: Tensor) -> Tensor:
    """``lowbias32`` on an ``int64`` tensor whose values lie in ``[0, 2**32)``; same shape back.

    Example:
        >>> int(mix32(torch.tensor([12345]))[0]) == mix32_int(12345)
        True
    """
    x = x ^ (x >> 16)
    x = _mul32(x, _MUL_A)
    x = x ^ (x >> 15)
    x = _mul32(x, _MUL_B)
    return x ^ (x >> 16)


def _label_salt(label: str) -> int:
    # zlib.crc32, not hash(): Python's string hash changes from process to process.
    return mix32_int(zlib.crc32(label.encode()) ^ 0x5BD1E995)


def image_keys(seed: int, name: str, index: Tensor) -> Tensor:
    """One 32-bit key per image from ``(seed, name, index)``.

    Args:
        seed: any Python int (taken modulo ``2**64``).
        name: the shift family, hashed with ``zlib.crc32``.
        index: ``int64 [B]`` dataset indices (any value, negative ones included).

    Returns:
        ``int64 [B]`` keys in ``[0, 2**32)``.
    """
    seed &= (1 << 64) - 1
    base = mix32_int(seed ^ _label_salt(name))
    base = mix32_int(base ^ mix32_int((seed >> 32) + _GOLDEN))
    idx = index.to(torch.int64)
    lo = idx & _MASK32
    hi = (idx >> 32) & _MASK32
    key = mix32(lo ^ base)
    return mix32(key ^ ((hi + _GOLDEN) & _MASK32))


class ImageRandom:
    """Uniform and normal draws for a batch of images, each row keyed by its own image.

    Row ``i`` of every draw depends only on ``keys[i]``, the label and the element position,
    so results do not depend on batch size or order. Families ask for draws by label
    (``"angle"``, ``"noise"``) and reuse the same labels at every severity, so severity 5 is a
    stronger version of the *same* corruption as severity 1 (common random numbers).

    Example:
        >>> rnd = ImageRandom(seed=0, name="gaussian-noise", index=torch.arange(3))
        >>> u = rnd.uniform("noise", (2, 2))
        >>> u.shape, bool(((u > 0) & (u < 1)).all())
        (torch.Size([3, 2, 2]), True)
    """

    def __init__(self, seed: int, name: str, index: Tensor) -> None:
        self.keys = image_keys(seed, name, index)

    @property
    def batch_size(self) -> int:
        return int(self.keys.shape[0])

    def _bits(self, label: str, shape: Sequence[int]) -> Tensor:
        n = math.prod(shape)
        row = mix32(self.keys ^ _label_salt(label)).unsqueeze(1)  # [B, 1]
        ctr = mix32(torch.arange(n, dtype=torch.int64, device=self.keys.device))  # [n]
        return mix32(row ^ ctr).reshape(self.batch_size, *shape)

    def uniform(self, label: str, shape: Sequence[int] = ()) -> Tensor:
        """``float32 [B, *shape]`` uniforms in the open interval ``(0, 1)``."""
        bits = self._bits(label, shape) >> 8  # 24 bits: exactly representable in float32
        return (bits.to(torch.float32) + 0.5) * (1.0 / (1 << 24))

    def normal(self, label: str, shape: Sequence[int] = ()) -> Tensor:
        """``float32 [B, *shape]`` standard normals (Box-Muller on two uniform streams)."""
        u1 = self.uniform(label + "/radius", shape)
        u2 = self.uniform(label + "/angle", shape)
        return torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(_TWO_PI * u2)

    def sign(self, label: str, shape: Sequence[int] = ()) -> Tensor:
        """``float32 [B, *shape]`` of ``-1.0`` or ``+1.0`` with equal probability."""
        return torch.where(self.uniform(label, shape) < 0.5, -1.0, 1.0)
