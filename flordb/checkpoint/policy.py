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
        return self.spent_seconds + self.est_cost <= self.epsilon * self.compute_seconds

    def record_cost(self, seconds: float) -> None:
        """Account for a checkpoint's foreground cost (also for forced ones)."""
        seconds = max(0.0, float(seconds))
        self.spent_seconds += seconds
        self.taken += 1
        if self.est_cost is None:
            self.est_cost = seconds
        else:
            self.est_cost += self.smoothing * (seconds - self.est_cost)

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
