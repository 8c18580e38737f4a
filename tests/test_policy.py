"""Adaptive checkpoint policy: overhead within ε, first and last always taken."""

from __future__ import annotations

import random

import pytest

from flordb.checkpoint.policy import DEFAULT_EPSILON, AdaptivePolicy
from flordb.errors import ConfigError


def simulate(
    policy: AdaptivePolicy, iters: list[float], costs, last: bool = True, slack: float = 1e-9
) -> list[int]:
    """Run the policy over iteration times; ``costs(i)`` is a checkpoint's cost.

    ``slack``: how far one underestimated cost may overshoot the bound.
    """
    taken = []
    for i, seconds in enumerate(iters):
        if policy.should_checkpoint(i, seconds, is_last=last and i == len(iters) - 1):
            taken.append(i)
            policy.record_cost(costs(i))
            if i not in (0, len(iters) - 1):
                # Outside the forced ones, the bound holds after each checkpoint.
                assert policy.spent_seconds <= policy.epsilon * policy.compute_seconds + slack
    return taken


def test_cheap_checkpoints_are_taken_every_iteration() -> None:
    policy = AdaptivePolicy()
    taken = simulate(policy, [1.0] * 50, lambda i: 0.01)
    assert taken == list(range(50))
    assert policy.achieved_overhead == pytest.approx(0.01)


def test_expensive_checkpoints_are_spaced_to_epsilon() -> None:
    rng = random.Random(0)
    iters = [rng.uniform(0.5, 1.5) for _ in range(600)]
    policy = AdaptivePolicy(epsilon=DEFAULT_EPSILON)
    taken = simulate(policy, iters, lambda i: 0.5)
    assert taken[0] == 0 and taken[-1] == 599
    forced = 2 * 0.5
    assert policy.spent_seconds <= policy.epsilon * policy.compute_seconds + forced
    # And not needlessly sparse: close to the budget.
    assert policy.achieved_overhead >= 0.8 * policy.epsilon
    assert 60 <= len(taken) <= 85  # ~ 600 * (1/15) / 0.5 = 80


def test_noisy_costs_still_respect_the_bound() -> None:
    rng = random.Random(1)
    iters = [rng.expovariate(1.0) for _ in range(2000)]
    policy = AdaptivePolicy(epsilon=0.05)
    # The first checkpoint is the slowest (allocations warm up), then noise.
    simulate(policy, iters, lambda i: 2.0 if i == 0 else rng.uniform(0.05, 0.35), slack=0.35)
    assert policy.achieved_overhead <= 0.05 + 2.5 / policy.compute_seconds


def test_first_and_last_are_always_taken() -> None:
    policy = AdaptivePolicy(epsilon=0.0)
    taken = simulate(policy, [1.0] * 10, lambda i: 5.0)
    assert taken == [0, 9]
    policy = AdaptivePolicy(epsilon=0.1)
    assert policy.should_checkpoint(0, 1.0, is_last=True)  # one-iteration loop


def test_forced_checkpoint_without_len() -> None:
    # An iterable without len: the caller forces one at loop exit and records it.
    policy = AdaptivePolicy(epsilon=0.1)
    simulate(policy, [1.0] * 5, lambda i: 1.0, last=False)
    before = policy.taken
    policy.record_cost(1.0)
    assert policy.taken == before + 1 and policy.spent_seconds == before + 1.0


def test_bad_epsilon_is_a_config_error() -> None:
    for bad in (-0.1, float("nan"), "0.1"):
        with pytest.raises(ConfigError, match="FLORDB_EPSILON"):
            AdaptivePolicy(epsilon=bad)  # type: ignore[arg-type]
    assert AdaptivePolicy().achieved_overhead == 0.0
