"""One budget for a search: a deadline and a sample count, read through one clock.

Every stage that can run long (sampler chunks, dictionary rounds, ADM and IRLS steps,
pool polishing, certificate-guided swaps) asks the same :class:`Budget` whether time is
up. The clock is injectable, so tests can check the budget logic without depending on
how busy the machine is.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

#: Samples evaluated when neither max_samples nor time_limit is given.
DEFAULT_MAX_SAMPLES = 500_000_000


@dataclass
class Budget:
    """time_limit: seconds from creation (None: no deadline); max_samples: sampler
    samples (None: unlimited, or DEFAULT_MAX_SAMPLES when time_limit is None too)."""

    time_limit: float | None = None
    max_samples: int | None = None
    clock: Callable[[], float] = time.perf_counter
    samples: int = 0                         # sampler samples spent so far
    start: float = field(init=False)

    def __post_init__(self) -> None:
        if self.max_samples is not None and (isinstance(self.max_samples, bool)
                                             or int(self.max_samples) != self.max_samples
                                             or self.max_samples < 0):
            raise ValueError(f"max_samples must be a non-negative integer, got {self.max_samples!r}")
        if self.time_limit is not None and not self.time_limit > 0:
            raise ValueError(f"time_limit must be positive seconds, got {self.time_limit!r}")
        if self.max_samples is None and self.time_limit is None:
            self.max_samples = DEFAULT_MAX_SAMPLES
        self.start = self.clock()

    def elapsed(self) -> float:
        return self.clock() - self.start

    def remaining(self) -> float | None:
        """Seconds left (never negative), or None without a deadline."""
        return None if self.time_limit is None else max(self.time_limit - self.elapsed(), 0.0)

    def expired(self) -> bool:
        return self.time_limit is not None and self.elapsed() > self.time_limit

    def samples_left(self) -> int | None:
        return None if self.max_samples is None else max(self.max_samples - self.samples, 0)

    def spend(self, samples: int) -> None:
        self.samples += int(samples)

    def share(self, fraction: float) -> "Budget | Share":
        """This budget, or a view of it whose deadline comes after ``fraction`` of the
        time left (a source that must leave time to the others)."""
        left = self.remaining()
        if left is None or fraction >= 1.0:
            return self
        return Share(self.clock, self.clock() + fraction * left)


@dataclass
class Share:
    """A slice of a budget's time: only a deadline, on the same clock."""

    clock: Callable[[], float]
    deadline: float

    def expired(self) -> bool:
        return self.clock() > self.deadline

    def remaining(self) -> float:
        return max(self.deadline - self.clock(), 0.0)


def expired(budget: Budget | None) -> bool:
    """For stages that may run without a budget (called on their own: tests, tools)."""
    return budget is not None and budget.expired()
