"""Static analysis for replay: log sites per loop level, skip-block locals, outer-mode hazards."""
from __future__ import annotations

from flordb.hindsight.statements import capture_candidates, outer_mode_hazard, shape

SCRIPT = '''import flordb as flor
losses = []
with flor.checkpointing(model=net, optimizer=opt, scheduler=sched):
    for epoch in flor.loop("epoch", range(3)):
        total = 0.0
        for x, y in flor.loop("step", loader):
            loss = step(x, y)
            total += loss
            losses.append(loss)
            flor.log("loss", loss)
        flor.log("avg", total / 10)
        flor.log("last", losses[-1])
        sched.step()
        flor.log("lr", sched.get_last_lr()[0])
flor.log("final", 1)
'''


def test_sites_carry_their_loop_chain():
    sh = shape(SCRIPT)
    assert sh.outer == "epoch" and sh.outer_line == 4
    assert sh.sites["loss"][0].loops == ("epoch", "step")
    assert sh.sites["avg"][0].loops == ("epoch",)
    assert sh.sites["final"][0].loops == () and sh.sites["final"][0].after_outer


def test_locals_a_skipped_inner_loop_must_hand_back():
    names = capture_candidates(SCRIPT, 4)
    assert {"total", "losses"} <= names  # carried sum, list mutated by append
    assert "x" not in names and "y" not in names  # rebound every step, unread after


def test_outer_mode_refused_after_a_state_mutation():
    assert outer_mode_hazard(SCRIPT, ("avg",)) is None  # before sched.step()
    why = outer_mode_hazard(SCRIPT, ("lr",))
    assert why and "sched.step" in why


def test_loops_inside_called_helpers_are_not_lexical():
    src = '''import flordb as flor
def train(loader):
    for b in flor.loop("batch", loader):
        pass
for epoch in flor.loop("epoch", range(2)):
    train(loader)
    flor.log("acc", 1)
'''
    sh = shape(src)
    assert not sh.inner_lexical
    assert sh.sites["acc"][0].loops == ("epoch",)
