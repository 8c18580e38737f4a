"""When to checkpoint: keep foreground checkpoint cost within ε of compute.

The rule, applied at the end of each outer-loop iteration:

* ``compute`` accumulates every iteration's compute time (the caller measures
  it without the checkpoint's own cost); ``spent`` accumulates the foreground
  cost of every checkpoint taken; ``est`` is an exponential moving average of
  the measured costs.
* Checkpoint if this is the last iteration (always), or no cost has been
  measured yet (the first iteration, to learn the cost), or
  ``spent + est <= ε * compute``.

So every iteration is checkpointed when that is affordable, and otherwise
checkpoints are spaced so the overhead settles at ε. Apart from the forced
first and last checkpoints, ``spent <= ε * compute`` holds after every
decision up to one cost misestimate.

The background writer's CPU time (encoding, hashing, writing: typically 10-15x
the foreground copy) is free while it runs on an idle core, but slows training
one for one when the cores are busy. :meth:`record_background` charges it to
``spent``, weighted by :func:`contention` (0 with a spare core, 1 without), and
``est`` then includes the expected background charge per checkpoint.

Example:
    >>> p = AdaptivePolicy(epsilon=0.125)
    >>> p.should_checkpoint(0, iter_seconds=1.0)  # first: measure the cost
    True
    >>> p.record_cost(0.25)
    >>> [p.should_checkpoint(i, 1.0) for i in range(1, 4)]  # 0.25 + 0.25 <= 0.125 * 4
    [False, False, True]
"""

from __future__ import annotations

import math
import os

from flordb.errors import ConfigError

DEFAULT_EPSILON = 1 / 15


class AdaptivePolicy:
    """Decides per iteration end whether to checkpoint, within overhead ε."""

    def __init__(self, epsilon: float = DEFAULT_EPSILON, smoothing: float = 0.3) -> None:
        if not isinstance(epsilon, (int, float)) or math.isnan(epsilon) or epsilon < 0:
            raise ConfigError(
                f"FLORDB_EPSILON must be a number >= 0, received {epsilon!r}; e.g. FLORDB_EPSILON=0.0667"
            )
        if not 0 < smoothing <= 1:
            raise ConfigError(f"smoothing must be in (0, 1], received {smoothing!r}")
        self.epsilon = float(epsilon)
        self.smoothing = smoothing
        self.compute_seconds = 0.0
        self.spent_seconds = 0.0
        self.est_cost: float | None = None
        self.est_background = 0.0
        self.background_seconds = 0.0
        self.taken = 0
        self.decisions = 0

    def should_checkpoint(
        self, iter_index: int, iter_seconds: float, is_last: bool = False
    ) -> bool:
        """Record an iteration's compute time and decide whether to checkpoint it.

        Call :meth:`record_cost` with the checkpoint's foreground seconds
        after taking it.
        """
        self.compute_seconds += max(0.0, float(iter_seconds))
        self.decisions += 1
        if is_last or self.est_cost is None:
            return True
        expected = self.est_cost + self.est_background
        return self.spent_seconds + expected <= self.epsilon * self.compute_seconds

    def record_cost(self, seconds: float) -> None:
        """Account for a checkpoint's foreground cost (also for forced ones)."""
        seconds = max(0.0, float(seconds))
        self.spent_seconds += seconds
        self.taken += 1
        if self.est_cost is None:
            self.est_cost = seconds
        else:
            self.est_cost += self.smoothing * (seconds - self.est_cost)

    def record_background(self, seconds: float) -> None:
        """Charge one checkpoint's background cost (CPU seconds x contention)."""
        seconds = max(0.0, float(seconds))
        self.spent_seconds += seconds
        self.background_seconds += seconds
        self.est_background += self.smoothing * (seconds - self.est_background)

    @property
    def achieved_overhead(self) -> float:
        """Foreground checkpoint seconds per compute second so far."""
        if self.compute_seconds <= 0:
            return 0.0 if self.spent_seconds == 0 else math.inf
        return self.spent_seconds / self.compute_seconds

    def __repr__(self) -> str:
        return (
            f"AdaptivePolicy(epsilon={self.epsilon:.4g}, taken={self.taken}/{self.decisions}, "
            f"overhead={self.achieved_overhead:.4g})"
        )


def contention(background_busy: float = 0.0) -> float:
    """How much the background writer's CPU time slows training, from 0 to 1.

    0 while an idle core is left for it, 1 when the cores are already busy:
    ``1 - (cores - (load - background_busy))`` clipped to [0, 1], where
    ``load`` is the 1-minute load average and ``background_busy`` the writer's
    own share of it (its CPU seconds per second). Without a load average
    (not Unix) the background counts in full.

    Example:
        >>> 0.0 <= contention() <= 1.0
        True
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        return 1.0
    spare = cores - max(0.0, load - background_busy)
    return min(1.0, max(0.0, 1.0 - spare))
