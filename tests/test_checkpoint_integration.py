"""Checkpointing end to end: real torch training runs, the manifest in DuckDB, the
blob store on disk, restore and resume, the adaptive policy, crashes and full disks.

Scripts run as ``python train.py`` subprocesses in a tiny git repository (the
``repo`` fixture) with a private ``FLORDB_HOME``. Each training script also
``torch.save``s its state at the end of every epoch under ``ref/`` (plain
PyTorch, independent of flordb), and those files are the ground truth a
restored checkpoint is compared with.
"""
from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import flordb as flor

torch = pytest.importorskip("torch")

from flordb.checkpoint import manager as manager_mod
from flordb.checkpoint.blobstore import BlobStore
from flordb.checkpoint.codecs import ChainEncoder
from flordb.checkpoint.manager import (
    MAX_IN_FLIGHT,
    CheckpointManager,
    complete_iterations,
    load_state,
    restore,
)

# Shared by the scripts and, for the resume test, by this process: data, model
# and one epoch of training. Deterministic on one thread; the epoch draws from
# the global torch RNG (shuffle, dropout), so resuming needs the RNG restored too.
COMMON = '''
import torch

torch.set_num_threads(1)


def make_data(n=256, d=32, seed=1234):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g), torch.randint(0, 10, (n,), generator=g)


def make_model(seed=0, hidden=64):
    torch.manual_seed(seed)
    net = torch.nn.Sequential(
        torch.nn.Linear(32, hidden), torch.nn.ReLU(), torch.nn.Dropout(0.1),
        torch.nn.Linear(hidden, 10),
    )
    return net, torch.optim.Adam(net.parameters(), lr=1e-2)


def train_epoch(net, opt, x, y, loop=lambda name, it: it, log=lambda name, v: v, batch=32):
    net.train()
    perm = torch.randperm(len(x))
    for step in loop("step", range(len(x) // batch)):
        idx = perm[step * batch:(step + 1) * batch]
        loss = torch.nn.functional.cross_entropy(net(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        log("loss", loss.item())
'''

# Every epoch is checkpointed: ε is large and each epoch sleeps a little
# (standing in for data loading), so an epoch always costs more than its snapshot.
TRAIN = '''
import os, time
import torch
import flordb as flor
from common import make_data, make_model, train_epoch

epochs = flor.arg("epochs", 6)
x, y = make_data()
net, opt = make_model()
os.makedirs("ref", exist_ok=True)
with flor.checkpointing(model=net, optimizer=opt):
    for epoch in flor.loop("epoch", range(epochs)):
        train_epoch(net, opt, x, y, flor.loop, flor.log)
        torch.save({"model": net.state_dict(), "optimizer": opt.state_dict()}, f"ref/{epoch}.pt")
        time.sleep(0.03)
'''

EVERY_EPOCH = {"FLORDB_EPSILON": "0.9"}


def setup_repo(repo: Any) -> None:
    repo.write("common.py", COMMON)
    with open(repo.path / ".gitignore", "a") as f:
        f.write("ref/\n")
    repo.write_script(TRAIN)


def flordb_json(repo: Any, *args: str) -> list[dict[str, Any]]:
    proc = repo.flordb(*args, "--format", "json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def sql(text: str) -> list[dict[str, Any]]:
    """Rows of a query over this test's database, as plain Python values."""
    df = flor.query(text, backfill=False)
    return df.astype(object).where(df.notna(), None).to_dict("records")


def only_run(repo: Any) -> dict[str, Any]:
    runs = flordb_json(repo, "runs")
    assert len(runs) == 1, runs
    return runs[0]


def manifest_of(repo: Any, run_id: str) -> list[dict[str, Any]]:
    return sql(f"SELECT * FROM checkpoints WHERE run_id = '{run_id}' ORDER BY iteration")


def state_tensors(state: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Every tensor and number of a (nested) state_dict, by path."""
    out: dict[str, Any] = {}
    for key, value in state.items():
        path = f"{prefix}/{key}"
        if isinstance(value, dict):
            out.update(state_tensors(value, path))
        elif isinstance(value, (list, tuple)):
            out.update(state_tensors(dict(enumerate(value)), path))
        else:
            out[path] = value
    return out


def assert_bit_exact(restored: dict[str, Any], reference: dict[str, Any]) -> None:
    got, want = state_tensors(restored), state_tensors(reference)
    assert got.keys() == want.keys()
    for path, value in want.items():
        if isinstance(value, torch.Tensor):
            assert got[path].dtype == value.dtype, path
            assert torch.equal(got[path], value), path
        else:
            assert got[path] == value, path


def fresh_objects(repo: Any, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Any, Any]:
    """The repository's ``common`` module and a differently initialised model + optimizer."""
    monkeypatch.syspath_prepend(str(repo.path))
    monkeypatch.delitem(sys.modules, "common", raising=False)
    threads = torch.get_num_threads()
    import common  # type: ignore[import-not-found]

    torch.set_num_threads(threads)  # common pins one thread; the test resets it at the end
    net, opt = common.make_model(seed=99)
    return common, net, opt


# ------------------------------------------------------------------ codecs
@pytest.mark.parametrize("codec", ["none", "lossless", "lc"])
def test_codec_end_to_end(repo: Any, codec: str, monkeypatch: pytest.MonkeyPatch) -> None:
    setup_repo(repo)
    proc = repo.run_script(env={**EVERY_EPOCH, "FLORDB_CODEC": codec})
    assert "6 checkpoints" in proc.stderr
    run_id = only_run(repo)["run_id"]

    listing = flordb_json(repo, "checkpoints", run_id)
    assert listing, "no manifest rows"
    for row in listing:
        assert {"run_id", "iteration", "object", "codec", "raw_bytes", "stored_bytes"} <= row.keys()
        assert row["run_id"] == run_id and row["status"] == "ok"
        assert row["raw_bytes"] >= 0 and row["stored_bytes"] > 0
    by_object = {(r["object"], r["iteration"]): r for r in listing}
    assert sorted(i for (o, i) in by_object if o == "model") == list(range(6))
    expected_model_codec = codec
    expected_opt_codec = "lossless" if codec == "lc" else codec  # lc keeps optimizer state exact
    assert {by_object["model", i]["codec"] for i in range(6)} == {expected_model_codec}
    assert {by_object["optimizer", i]["codec"] for i in range(6)} == {expected_opt_codec}
    if codec == "none":
        assert all(by_object["model", i]["kind"] == "key" for i in range(6))
    else:  # one keyframe, then deltas (keyframe_every is 8 or more)
        assert [by_object["model", i]["kind"] for i in range(6)] == ["key"] + ["delta"] * 5

    manifest = manifest_of(repo, run_id)
    store = BlobStore(repo.home)
    assert (repo.home / "blobs").is_dir()
    for row in manifest:
        path = store.path(row["digest"])
        assert path.is_file() and path.is_relative_to(repo.home / "blobs")
        _, data = manager_mod.unpack(store.get(row["digest"]))  # hash verified
        assert len(data) == row["stored_bytes"]
    assert complete_iterations(manifest) == list(range(6))

    approx = sql(f"SELECT object, iteration, approximate FROM checkpoints "
                       f"WHERE run_id = '{run_id}' AND approximate")
    if codec == "lc":
        assert {(r["object"]) for r in approx} == {"model"}
        assert {r["iteration"] for r in approx} == {1, 2, 3, 4, 5}  # deltas, not the keyframe
    else:
        assert approx == []

    _, net, opt = fresh_objects(repo, monkeypatch)
    errors: dict[str, list[float]] = {}
    for k in range(6):
        _, approximate = restore(repo.home, manifest, k, {"model": net, "optimizer": opt})
        ref = torch.load(repo.path / "ref" / f"{k}.pt")
        assert_bit_exact(opt.state_dict(), ref["optimizer"])  # exact under every codec
        if codec in ("none", "lossless"):
            assert not approximate
            assert_bit_exact(net.state_dict(), ref["model"])
            continue
        assert approximate == (k > 0)
        for name, want in ref["model"].items():
            got = net.state_dict()[name]
            if want.numel() < 1024:  # small tensors (biases) stay lossless
                assert torch.equal(got, want), name
            else:
                errors.setdefault(name, []).append(float((got - want).norm() / want.norm()))
    for name, errs in errors.items():  # relative L2 error per checkpoint, b = 3
        assert errs[0] == 0 and all(0 < e < 0.1 for e in errs[1:]), (name, errs)
        assert errs[-1] <= 1.5 * errs[1], (name, errs)  # carried forward, not accumulated


# ------------------------------------------------------------------ resume
def test_resume_from_checkpoint_continues_bit_exact(
    repo: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    setup_repo(repo)
    repo.run_script(env=EVERY_EPOCH)
    run_id = only_run(repo)["run_id"]
    losses = sql(f"SELECT i1 AS epoch, i2 AS step, num FROM logs "
                       f"WHERE run_id = '{run_id}' AND name = 'loss' ORDER BY seq")
    assert len(losses) == 6 * 8
    manifest = manifest_of(repo, run_id)

    common, net, opt = fresh_objects(repo, monkeypatch)
    x, y = common.make_data()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        k = 2  # a delta in the lossless chain
        torch.manual_seed(12345)  # anything: restore must replace the RNG state
        restore(repo.home, manifest, k, {"model": net, "optimizer": opt})
        resumed: list[float] = []
        for _ in range(k + 1, 6):
            common.train_epoch(net, opt, x, y, log=lambda name, v: resumed.append(v))
    finally:
        torch.set_num_threads(threads)
    original = [r["num"] for r in losses if r["epoch"] > k]
    assert resumed == original  # bit-exact, not approximately equal
    assert_bit_exact(net.state_dict(), torch.load(repo.path / "ref" / "5.pt")["model"])


# ------------------------------------------------------------ adaptive policy
EXPENSIVE = '''
import time
import numpy as np
import flordb as flor

big = np.random.default_rng(0).random(6_000_000, dtype=np.float32)  # 24 MB per snapshot
with flor.checkpointing(big=big):
    for i in flor.loop("epoch", range(40)):
        big[i] += 1.0
        time.sleep(0.001)
'''

CHEAP = '''
import sys, time
import torch
import flordb as flor

if len(sys.argv) > 1:
    flor.config(epsilon=sys.argv[1])
net = torch.nn.Linear(8, 2)
with flor.checkpointing(model=net):
    for i in flor.loop("epoch", range(10)):
        loss = net(torch.ones(4, 8)).square().mean()
        net.zero_grad()
        loss.backward()
        with torch.no_grad():  # plain SGD (a torch optimizer's first use costs seconds)
            for p in net.parameters():
                p -= 0.1 * p.grad
        flor.log("loss", loss.item())
        time.sleep(0.15)  # an outer iteration ~50x a checkpoint's total cost
'''


def iterations(repo: Any, filename: str) -> list[dict[str, Any]]:
    return sql(
        "SELECT i.iteration, i.checkpointed, r.ckpt_overhead FROM iterations i "
        f"JOIN runs r USING (run_id) WHERE r.filename = '{filename}' ORDER BY i.iteration",
    )


def test_adaptive_policy_spaces_expensive_checkpoints(repo: Any) -> None:
    repo.write_script(EXPENSIVE, "expensive.py")
    repo.write_script(CHEAP, "cheap.py")
    repo.run_script(script="expensive.py")
    repo.run_script(script="cheap.py")

    rows = iterations(repo, "expensive.py")
    assert [r["iteration"] for r in rows] == list(range(40))
    taken = [r["iteration"] for r in rows if r["checkpointed"]]
    assert taken[0] == 0 and taken[-1] == 39  # first (to learn the cost) and last, always
    assert len(taken) < 10, taken  # a 24 MB copy per 1 ms iteration is far beyond 1/15
    manifest = sql("SELECT DISTINCT c.iteration FROM checkpoints c JOIN runs r "
                         "USING (run_id) WHERE r.filename = 'expensive.py' ORDER BY 1")
    assert [r["iteration"] for r in manifest] == taken
    assert rows[0]["ckpt_overhead"] is not None and rows[0]["ckpt_overhead"] > 0

    rows = iterations(repo, "cheap.py")
    assert all(r["checkpointed"] for r in rows) and len(rows) == 10
    assert 0 < rows[0]["ckpt_overhead"] < 1 / 15


@pytest.mark.parametrize("how", ["env", "config"])
def test_epsilon_setting(repo: Any, how: str) -> None:
    repo.write_script(CHEAP, "cheap.py")
    if how == "env":
        repo.run_script(script="cheap.py", env={"FLORDB_EPSILON": "0.00001"})
    else:
        repo.run_script("0.00001", script="cheap.py")
    # A budget of 10 µs per second of compute: only the forced first and last.
    taken = [r["iteration"] for r in iterations(repo, "cheap.py") if r["checkpointed"]]
    assert taken == [0, 9]


BAD = '''
import sys
import numpy as np
import flordb as flor

if len(sys.argv) > 1:
    flor.config(epsilon=sys.argv[1])
state = np.zeros(4)
with flor.checkpointing(state=state):
    for i in flor.loop("epoch", range(3)):
        state += 1
'''


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        ((), {"FLORDB_EPSILON": "2"}, "FLORDB_EPSILON='2' is invalid"),
        (("abc",), {}, "flor.config(epsilon='abc') is invalid"),
    ],
)
def test_bad_epsilon_is_one_line(repo: Any, args: tuple, env: dict, message: str) -> None:
    repo.write_script(BAD, "bad.py")
    proc = repo.run_script(*args, script="bad.py", env=env, check=False)
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if line.startswith("flordb: error:")]
    assert len(errors) == 1 and message in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr


# ----------------------------------------------------------------- kill -9
KILLED = '''
import time
import numpy as np
import flordb as flor

rng = np.random.default_rng(0)
big = rng.random(4_000_000, dtype=np.float32)  # 16 MB of noise: slow to encode and write
with flor.checkpointing(big=big):
    for i in flor.loop("epoch", range(1000)):
        big[:] = rng.random(big.size, dtype=np.float32)
        flor.log("i", i)
        time.sleep(0.02)
'''


def test_kill_9_mid_write_leaves_a_consistent_store(repo: Any) -> None:
    repo.write_script(KILLED)
    proc = repo.start_script(env=EVERY_EPOCH)
    blobs = repo.home / "blobs"
    deadline = time.monotonic() + 60
    while sum(1 for _ in BlobStore(repo.home)) < 4:  # the first checkpoints have landed
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        assert time.monotonic() < deadline, "no checkpoint written within 60 s"
        time.sleep(0.02)
    time.sleep(random.uniform(0.0, 0.3))  # then anywhere in a later write
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)

    run = only_run(repo)  # any flordb command lands the killed run's segment
    assert run["status"] == "killed"
    manifest = manifest_of(repo, run["run_id"])
    assert manifest and all(r["status"] == "ok" for r in manifest)
    store = BlobStore(repo.home)
    for row in manifest:  # every row points at a blob whose hash verifies
        store.get(row["digest"])
    for digest in store:  # no torn blob under a final name (temp files may remain)
        store.get(digest)
    leftovers = [p.name for p in blobs.glob("*/*") if not p.name.startswith(".tmp-")]
    assert len(leftovers) == sum(1 for _ in store)
    # The last complete iteration restores.
    last = complete_iterations(manifest)[-1]
    tensors, _, approximate = load_state(repo.home, manifest, last)
    assert not approximate and tensors["big"].shape == (4_000_000,)


# ------------------------------------------------------ disk full / failures
FAILING = '''
import os, time
import torch
import flordb as flor
from flordb.record import run as run_mod
from common import make_data, make_model, train_epoch

x, y = make_data()
net, opt = make_model()
os.makedirs("ref", exist_ok=True)
with flor.checkpointing(model=net, optimizer=opt):
    for epoch in flor.loop("epoch", range(6)):
        if epoch == 3:
            # Iterations 0-2 were checkpointed onto the failing store (3 objects
            # each: model, optimizer, RNG); wait for their writes to fail, then
            # free the space.
            manager = run_mod.active().checkpoints
            while manager.failed < 9:
                time.sleep(0.01)
            os.remove(os.environ["FILLER"])
        train_epoch(net, opt, x, y, log=flor.log)
        torch.save({"model": net.state_dict(), "optimizer": opt.state_dict()}, f"ref/{epoch}.pt")
        time.sleep(0.03)
'''


@pytest.fixture
def full_disk(repo: Any):
    """``FLORDB_HOME/blobs`` on a tiny tmpfs filled to the last byte (root only)."""
    blobs = repo.home / "blobs"
    blobs.mkdir(parents=True)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(blobs)],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    filler = blobs / "filler"
    try:
        with open(filler, "wb") as f:
            while True:
                f.write(b"\0" * 4096)
                f.flush()
    except OSError:
        pass
    try:
        yield filler
    finally:
        subprocess.run(["umount", "-l", str(blobs)], capture_output=True, check=False)


@pytest.fixture
def unwritable(repo: Any) -> Path:
    """``FLORDB_HOME/blobs`` is a file, so every blob write fails (also for root)."""
    repo.home.mkdir(parents=True, exist_ok=True)
    blocker = repo.home / "blobs"
    blocker.write_text("not a directory\n")
    return blocker


@pytest.mark.parametrize("failure", ["full_disk", "unwritable"])
def test_write_failure_keeps_training(
    repo: Any, failure: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    setup_repo(repo)
    repo.write_script(FAILING)
    filler = request.getfixturevalue(failure)
    proc = repo.run_script(env={**EVERY_EPOCH, "FILLER": str(filler)})
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("flordb: warning")]
    assert len(warnings) == 1, proc.stderr
    assert "checkpoint write failed" in warnings[0]
    if failure == "full_disk":
        assert "disk is full" in warnings[0]

    run = only_run(repo)
    assert run["status"] == "finished"
    logs = sql(f"SELECT count(*) AS n FROM logs WHERE run_id = '{run['run_id']}'")
    assert logs[0]["n"] == 6 * 8  # every record kept
    manifest = manifest_of(repo, run["run_id"])
    failed = [r for r in manifest if r["status"] == "failed"]
    assert {r["iteration"] for r in failed} == {0, 1, 2}
    assert all(r["digest"] is None and r["error"] for r in failed)
    assert complete_iterations(manifest) == [3, 4, 5]
    for obj in ("model", "optimizer"):  # after recovery each chain restarts with a keyframe
        rows = {r["iteration"]: r for r in manifest if r["object"] == obj}
        assert [rows[i]["kind"] for i in (3, 4, 5)] == ["key", "delta", "delta"]
        assert {rows[i]["base_iteration"] for i in (3, 4, 5)} == {3}

    _, net, opt = fresh_objects(repo, monkeypatch)
    restore(repo.home, manifest, 5, {"model": net, "optimizer": opt})
    ref = torch.load(repo.path / "ref" / "5.pt")
    assert_bit_exact(net.state_dict(), ref["model"])
    assert_bit_exact(opt.state_dict(), ref["optimizer"])


# ------------------------------------------- the manager: queue and threads
class _Writer:
    def __init__(self) -> None:
        self.frames: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def frame(self, frame: dict[str, Any]) -> None:
        with self.lock:
            self.frames.append(frame)


class _Run:
    """What CheckpointManager needs of a run: FLORDB_HOME and a segment writer."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.writer = _Writer()

    def rows(self) -> list[dict[str, Any]]:
        return [row for f in self.writer.frames if f["t"] == "ckpt" for row in f["items"]]


def test_backpressure_bounds_snapshots_in_flight(flordb_home: Path) -> None:
    run = _Run(flordb_home)
    state = np.zeros(10_000, dtype=np.float32)
    mgr = CheckpointManager(run, {"state": state}, loop_name="epoch", depth=0)
    writing, release = threading.Event(), threading.Event()
    real_put = mgr.blobs.put

    def slow_put(data: bytes) -> str:  # a disk that takes forever
        writing.set()
        assert release.wait(30)
        return real_put(data)

    mgr.blobs.put = slow_put  # type: ignore[method-assign]
    done: list[int] = []

    def train() -> None:
        for i in range(6):
            state[:] = i
            mgr.force(i)
            done.append(i)

    trainer = threading.Thread(target=train)
    trainer.start()
    try:
        assert writing.wait(10)
        deadline = time.monotonic() + 10
        while len(done) < MAX_IN_FLIGHT + 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)
        # One snapshot in the writer's hands, MAX_IN_FLIGHT queued; the next blocks.
        assert len(done) == MAX_IN_FLIGHT + 1
        assert mgr._queue.qsize() == MAX_IN_FLIGHT
        assert trainer.is_alive()
    finally:
        release.set()
        trainer.join(30)
    mgr.close()
    rows = run.rows()
    assert sorted({r["iteration"] for r in rows}) == list(range(6))
    assert all(r["status"] == "ok" for r in rows)
    tensors, _, _ = load_state(flordb_home, rows, 5)
    assert (tensors["state"] == 5).all()


def test_training_thread_pays_only_for_the_snapshot(
    flordb_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: dict[str, set[str]] = {"snapshot": set(), "encode": set(), "put": set()}
    release = threading.Event()
    real_snapshot, real_encode, real_put = (
        manager_mod.take_snapshot, ChainEncoder.encode, BlobStore.put,
    )

    def snapshot(*a: Any, **k: Any) -> Any:
        threads["snapshot"].add(threading.current_thread().name)
        return real_snapshot(*a, **k)

    def encode(self: Any, *a: Any, **k: Any) -> Any:
        threads["encode"].add(threading.current_thread().name)
        assert release.wait(30)
        return real_encode(self, *a, **k)

    def put(self: Any, *a: Any, **k: Any) -> Any:
        threads["put"].add(threading.current_thread().name)
        return real_put(self, *a, **k)

    monkeypatch.setattr(manager_mod, "take_snapshot", snapshot)
    monkeypatch.setattr(ChainEncoder, "encode", encode)
    monkeypatch.setattr(BlobStore, "put", put)
    run = _Run(flordb_home)
    net = torch.nn.Linear(64, 64)
    mgr = CheckpointManager(run, {"model": net}, loop_name="epoch", depth=0)
    mgr.force(0)  # returns although encoding is blocked: the training thread never waits for it
    assert mgr.taken == 1 and not run.rows()
    release.set()
    mgr.close()
    me = threading.current_thread().name
    assert threads == {
        "snapshot": {me}, "encode": {"flordb-checkpoints"}, "put": {"flordb-checkpoints"}
    }
    assert {r["object"] for r in run.rows()} == {"model", "__rng__"}


def test_background_cpu_is_charged_when_cores_are_busy(monkeypatch: pytest.MonkeyPatch) -> None:
    from flordb.checkpoint import policy as policy_mod

    monkeypatch.setattr(policy_mod.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    for load, busy, weight in [(0.5, 0.0, 0.0), (1.2, 0.2, 0.0), (2.0, 0.0, 1.0),
                               (6.0, 0.5, 1.0), (1.5, 0.0, 0.5)]:
        monkeypatch.setattr(policy_mod.os, "getloadavg", lambda load=load: (load, load, load))
        assert policy_mod.contention(busy) == pytest.approx(weight)

    def taken(background: float) -> int:
        p = policy_mod.AdaptivePolicy(epsilon=0.1)
        n = 0
        for i in range(100):
            if p.should_checkpoint(i, 1.0, is_last=i == 99):
                n += 1
                p.record_cost(0.01)
                p.record_background(background)
        assert p.spent_seconds <= 0.1 * p.compute_seconds + 0.01 + background
        return n

    # 10 ms in the foreground: every iteration; 490 ms more in the background: every 5th.
    assert taken(0.0) == 100
    assert 18 <= taken(0.49) <= 22
