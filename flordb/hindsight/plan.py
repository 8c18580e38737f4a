"""Which outer iterations a replay executes, restores or skips, split over workers.

Pure functions over recorded facts (iterations, checkpoint manifest, where the
requested statements sit); nothing here runs code or opens the database.

Modes of an outer iteration i:
  ``outer``  restore the checkpoint at the end of i, skip the inner loop, run the
             rest of the body (statements between inner loop and iteration end);
  ``full``   restore the state at the end of i-1 and run i, storing its values;
  ``run``    an iteration without a checkpoint before a needed one: run it only
             to reach the needed state (its values are exact, and stored too).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# A rough cost of restoring a checkpoint and running an outer-mode iteration's
# remaining body, as a fraction of a recorded iteration, for the estimate only.
OUTER_COST = 0.15
# Starting a worker (interpreter, torch import, the script's set-up) costs
# seconds; a run's iterations are split over more workers only when each
# share is worth at least a couple of start-ups.
WORKER_START_SECONDS = 1.5


@dataclass
class RunFacts:
    """What the database knows about one run, for planning."""

    run_id: str
    vid: str
    filename: str
    iterations: int  # recorded outer iterations
    seconds: list[float] = field(default_factory=list)  # per outer iteration
    checkpoints: list[int] = field(default_factory=list)  # complete checkpoints
    loop: str | None = None
    # carried through to the workers' specs
    manifest: list[dict[str, Any]] = field(default_factory=list)  # checkpoint rows
    args: dict[str, Any] = field(default_factory=dict)  # recorded flor.arg values
    run: dict[str, Any] = field(default_factory=dict)  # the runs-table row


@dataclass
class Segment:
    """One worker's share of a run."""

    plan: dict[int, str]
    stop_after: int | None
    post: bool
    start_from: int | None  # checkpoint restored before the first iteration (None: scratch)

    @property
    def executed(self) -> int:
        return sum(1 for m in self.plan.values() if m != "outer")

    @property
    def restored(self) -> int:
        return sum(1 for m in self.plan.values() if m == "outer")


@dataclass
class RunPlan:
    facts: RunFacts
    needed: list[int]
    segments: list[Segment]
    estimate: float

    @property
    def executed(self) -> int:
        return sum(s.executed for s in self.segments)

    @property
    def restored(self) -> int:
        return sum(s.restored for s in self.segments)


def plan_run(
    facts: RunFacts,
    needed: set[int],
    *,
    outer_ok: bool,
    post: bool,
    workers: int = 1,
) -> RunPlan:
    """Plan the replay of one run.

    ``needed``: outer iterations whose statements must be computed.
    ``outer_ok``: the requested statements may be computed in ``outer`` mode.
    ``post``: a requested statement runs after the loop, on the final state.
    """
    ckpts = set(facts.checkpoints)
    wanted = sorted(i for i in needed if 0 <= i < max(facts.iterations, 0))
    modes: dict[int, str] = {}
    for i in wanted:
        if outer_ok and i in ckpts:
            modes[i] = "outer"
        else:
            modes[i] = "full"
    groups = _split(wanted, modes, facts, max(1, workers))
    segments = []
    for k, group in enumerate(groups):
        plan: dict[int, str] = {}
        for i in group:
            if modes[i] == "full":
                # reach the end state of i-1: restore the nearest checkpoint, run the rest
                base = max((c for c in ckpts if c <= i - 1), default=-1)
                for j in range(base + 1, i):
                    plan.setdefault(j, "run")
            plan[i] = modes[i]
        first = min(plan) if plan else None
        start_from = None
        if first is not None and plan[first] != "outer" and first > 0:
            start_from = first - 1
        is_last = k == len(groups) - 1
        segments.append(
            Segment(plan, max(plan) if plan else -1, post and is_last, start_from)
        )
    if not segments and post:
        segments.append(Segment({}, -1, True, None))
    estimate = 0.0
    for seg in segments:
        estimate += WORKER_START_SECONDS
        for i, mode in seg.plan.items():
            secs = facts.seconds[i] if i < len(facts.seconds) else _mean(facts.seconds)
            estimate += secs * (OUTER_COST if mode == "outer" else 1.0)
    return RunPlan(facts, wanted, segments, estimate)


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else 1.0


def _split(wanted: list[int], modes: dict[int, str], facts: RunFacts, workers: int) -> list[list[int]]:
    """Contiguous groups of needed iterations of about equal estimated cost."""
    if not wanted:
        return []
    costs = []
    for i in wanted:
        secs = facts.seconds[i] if i < len(facts.seconds) else _mean(facts.seconds)
        costs.append(secs * (OUTER_COST if modes[i] == "outer" else 1.0))
    worth = int(sum(costs) // (2 * WORKER_START_SECONDS))
    n = max(1, min(workers, len(wanted), worth))
    target = sum(costs) / n
    groups: list[list[int]] = [[]]
    acc = 0.0
    for i, cost in zip(wanted, costs):
        if groups[-1] and acc + cost / 2 > target * len(groups) and len(groups) < n:
            groups.append([])
        groups[-1].append(i)
        acc += cost
    return groups


def describe(plans: list[RunPlan]) -> list[tuple[Any, ...]]:
    """Rows for the printed plan: run, version, iterations executed/restored, estimate."""
    return [
        (p.facts.run_id, p.facts.vid[:10], len(p.needed), p.executed, p.restored,
         len(p.segments), f"{p.estimate:.1f}s")
        for p in plans
    ]
