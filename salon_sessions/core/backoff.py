"""Exponential backoff with jitter, shared by the publisher and the subscriber."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delay before retry number `n` (1-based): `min(cap, base * 2**(n-1))`, "equal jitter"
    (half fixed, half random), so delays grow exponentially yet never synchronise."""

    base: float = 0.05
    cap: float = 2.0

    def __post_init__(self) -> None:
        if self.base <= 0 or self.cap < self.base:
            raise ValueError("backoff needs 0 < base <= cap")

    def ceiling(self, n: int) -> float:
        if n < 1:
            raise ValueError("retry numbers start at 1")
        return min(self.cap, self.base * 2.0 ** min(n - 1, 62))

    def delay(self, n: int, rng: random.Random) -> float:
        ceiling = self.ceiling(n)
        return ceiling / 2 + rng.uniform(0, ceiling / 2)
