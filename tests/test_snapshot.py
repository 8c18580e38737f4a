"""Snapshots of registered objects: copy, encode, decode, restore, bit for bit."""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
from collections import OrderedDict

import numpy as np
import pytest
import torch

from flordb.checkpoint.codecs import ChainEncoder, decode_chain, object_codec
from flordb.checkpoint.snapshot import (
    RNG_NAME,
    decode_value,
    dumps_skeleton,
    encode_value,
    loads_skeleton,
    merge_parts,
    restore_snapshot,
    take_snapshot,
)
from flordb.errors import CheckpointError


class Net(torch.nn.Module):
    """Conv + BatchNorm + Linear layers, one of them large enough for lc."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3)
        self.bn = torch.nn.BatchNorm2d(4)
        self.fc1 = torch.nn.Linear(4 * 6 * 6, 16)  # 2304 weights: quantised by lc
        self.drop = torch.nn.Dropout(0.2)
        self.fc2 = torch.nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn(self.conv(x))).flatten(1)
        return self.fc2(self.drop(torch.relu(self.fc1(h))))


def make_objects() -> dict:
    torch.manual_seed(0)
    net = Net()
    sgd_net = torch.nn.Linear(5, 4)
    adam = torch.optim.Adam(net.parameters(), lr=1e-2)
    sgd = torch.optim.SGD(sgd_net.parameters(), lr=0.1, momentum=0.9)
    return {
        "model": net,
        "linear": sgd_net,
        "adam": adam,
        "sgd": sgd,
        "onecycle": torch.optim.lr_scheduler.OneCycleLR(adam, max_lr=0.1, total_steps=100),
        "steplr": torch.optim.lr_scheduler.StepLR(sgd, step_size=2, gamma=0.5),
        "scaler": torch.amp.GradScaler("cpu"),
        "arr": np.arange(12, dtype=np.float64).reshape(3, 4),
        "bf16": torch.randn(7, dtype=torch.bfloat16),
        "fp16": torch.randn(2, 3, dtype=torch.float16),
        "i64": torch.arange(5, dtype=torch.int64),
        "pyrng": random.Random(7),
        "nprng": np.random.default_rng(7),
        "torchrng": torch.Generator().manual_seed(7),
        "best": {"acc": 0.5, 3: (1, float("nan")), "tags": ["a", "b"]},
        "epoch": 4,
    }


def train(objs: dict, steps: int) -> list[float]:
    """A few optimizer steps on data drawn from the global RNGs."""
    losses = []
    net, lin = objs["model"], objs["linear"]
    for _ in range(steps):
        x = torch.randn(8, 1, 8, 8)
        loss = net(x).pow(2).mean() + lin(torch.randn(8, 5)).pow(2).mean()
        loss = loss + float(np.random.rand()) * 0 + random.random() * 0
        objs["adam"].zero_grad()
        objs["sgd"].zero_grad()
        loss.backward()
        objs["adam"].step()
        objs["sgd"].step()
        objs["onecycle"].step()
        objs["steplr"].step()
        losses.append(loss.item())
    with torch.no_grad():
        objs["bf16"].add_(1)
        objs["fp16"].mul_(2)
        objs["i64"].add_(3)
    objs["arr"] += 1
    objs["pyrng"].random()
    objs["nprng"].random()
    torch.rand(1, generator=objs["torchrng"])
    return losses


def state_of(objs: dict) -> dict:
    """Deep copies of every object's observable state, for comparison."""
    out = {}
    for name, obj in objs.items():
        if isinstance(obj, torch.Tensor):
            out[name] = obj.detach().clone()
        elif isinstance(obj, np.ndarray):
            out[name] = obj.copy()
        elif isinstance(obj, random.Random):
            out[name] = obj.getstate()
        elif isinstance(obj, np.random.Generator):
            out[name] = json.dumps(obj.bit_generator.state, sort_keys=True)
        elif isinstance(obj, torch.Generator):
            out[name] = obj.get_state().clone()
        elif hasattr(obj, "state_dict"):
            out[name] = _deepcopy(obj.state_dict())
        else:
            out[name] = obj
    return out


def _deepcopy(x):
    if isinstance(x, torch.Tensor):
        return x.detach().clone()
    if isinstance(x, dict):
        return {k: _deepcopy(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(_deepcopy(v) for v in x)
    return x


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.detach().resolve_conj().contiguous().reshape(-1).view(torch.uint8)


def assert_same(a, b, path="") -> None:
    """Bit-exact equality, dtype included; NaN equals NaN."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor), path
        assert a.dtype == b.dtype and a.shape == b.shape, path
        # Compare bit patterns, so NaN payloads and -0.0 count too.
        assert torch.equal(_bits(a), _bits(b)), path
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), path
    elif isinstance(a, dict):
        assert list(a) == list(b), path
        for k in a:
            assert_same(a[k], b[k], f"{path}/{k}")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{path}/{i}")
    elif isinstance(a, float) and math.isnan(a):
        assert isinstance(b, float) and math.isnan(b), path
    else:
        assert a == b and type(a) is type(b), (path, a, b)


def through_codec(snap, codec: str, chains: dict, objs: dict | None = None):
    """Encode each object part, decode it back, merge: what a restore sees."""
    snap.wait()
    parts = []
    for name, (tensors, skeleton) in snap.split().items():
        chosen = object_codec(codec, (objs or {}).get(name))
        enc, blobs = chains.setdefault(name, (ChainEncoder(chosen, keyframe_every=8), []))
        blobs.append(enc.encode(tensors).data)
        # The skeleton travels as JSON text, like in the manifest.
        parts.append((decode_chain(blobs), loads_skeleton(dumps_skeleton(skeleton))))
    return merge_parts(parts)


@pytest.mark.parametrize("codec", ["none", "lossless", "lc"])
def test_round_trip_every_object_kind(codec: str) -> None:
    objs = make_objects()
    train(objs, 3)
    chains: dict = {}
    # Three checkpoints of one chain: the last restores through two deltas.
    for _ in range(2):
        through_codec(take_snapshot(objs), codec, chains, objs)
        train(objs, 2)
    expected = state_of(objs)
    snap = take_snapshot(objs)
    tensors, skeleton = through_codec(snap, codec, chains, objs)
    train(objs, 3)
    live_arr = objs["arr"]
    values = restore_snapshot(objs, tensors, skeleton)
    assert objs["arr"] is live_arr  # in place
    got = state_of(objs)
    got["best"], got["epoch"] = values["best"], values["epoch"]
    if codec == "lc":
        # Large float tensors are approximate under lc; everything else exact.
        w, w0 = got["model"]["fc1.weight"], expected["model"]["fc1.weight"]
        assert torch.linalg.norm(w - w0) <= 0.05 * torch.linalg.norm(w0)
        got["model"]["fc1.weight"] = w0
    for name in expected:
        assert_same(expected[name], got[name], name)


def test_snapshot_is_a_copy() -> None:
    objs = make_objects()
    snap = take_snapshot(objs)
    before = {k: v.copy() for k, v in snap.tensors.items()}
    train(objs, 2)
    snap.wait()
    for key, arr in snap.tensors.items():
        assert arr.tobytes() == before[key].tobytes(), key


def test_keys_dtypes_and_skeleton_are_json() -> None:
    objs = make_objects()
    train(objs, 1)
    snap = take_snapshot(objs)
    assert "model/fc1.weight" in snap.tensors
    assert "adam/state/0/exp_avg" in snap.tensors
    assert snap.tensors["bf16"].dtype == np.uint16
    assert snap.skeleton["objects"]["bf16"]["tensor"]["dtype"] == "torch.bfloat16"
    assert snap.tensors["i64"].dtype == np.int64
    text = dumps_skeleton(snap.skeleton)  # strict JSON: raises on NaN literals
    assert "NaN" not in text
    assert loads_skeleton(text) == json.loads(text)
    parts = snap.split()
    assert set(parts) == set(objs) | {RNG_NAME}
    assert sum(len(t) for t, _ in parts.values()) == len(snap.tensors)


def test_rng_round_trip() -> None:
    torch.manual_seed(3)
    np.random.seed(3)
    random.seed(3)
    torch.rand(5), np.random.rand(5), random.random(), np.random.randn()  # cached gaussian
    snap = take_snapshot({})
    expected = (
        torch.rand(4),
        torch.randn(3),
        np.random.rand(4),
        np.random.randn(3),
        random.random(),
        random.gauss(0, 1),
    )
    torch.rand(100), np.random.rand(100), [random.random() for _ in range(10)]
    tensors, skeleton = through_codec(snap, "lossless", {})
    restore_snapshot({}, tensors, skeleton)
    got = (
        torch.rand(4),
        torch.randn(3),
        np.random.rand(4),
        np.random.randn(3),
        random.random(),
        random.gauss(0, 1),
    )
    assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])
    assert (got[2] == expected[2]).all() and (got[3] == expected[3]).all()
    assert got[4:] == expected[4:]


def test_replay_continues_bit_for_bit() -> None:
    objs = make_objects()
    train(objs, 3)
    snap = take_snapshot(objs)
    expected = train(objs, 4)
    tensors, skeleton = through_codec(snap, "lossless", {})
    # A fresh process would build fresh objects; then the restore.
    fresh = make_objects()
    restore_snapshot(fresh, tensors, skeleton)
    assert train(fresh, 4) == expected


def test_tagged_values_round_trip() -> None:
    od: OrderedDict = OrderedDict(a=1)
    od._metadata = {"": {"version": 2}}  # type: ignore[attr-defined]
    value = {
        1: (2, 3.5),
        (4, "x"): [None, True, -0.0, float("inf"), float("-inf")],
        "__t": "user key that looks like a tag",
        "big": 2**80,
        "bytes": b"\x00\xff",
        "set": {1, 2},
        "frozen": frozenset({"a"}),
        "complex": 1 + 2j,
        "np": np.float32(1.5),
        "npi": np.int16(-3),
        "dtype": np.dtype("<f2"),
        "tdtype": torch.bfloat16,
        "device": torch.device("cpu"),
        "size": torch.Size([2, 3]),
        "od": od,
    }
    encoded = encode_value(value)
    back = decode_value(json.loads(json.dumps(encoded, allow_nan=False)))
    assert back.keys() == value.keys()
    for k, v in value.items():
        assert back[k] == v and type(back[k]) is type(v), k
    assert math.copysign(1, back[(4, "x")][2]) == -1
    assert isinstance(back["od"], OrderedDict) and back["od"]._metadata == od._metadata


def test_unsupported_value_is_a_clear_error() -> None:
    with pytest.raises(CheckpointError, match="not supported"):
        take_snapshot({"fn": lambda: 1})
    with pytest.raises(CheckpointError, match="dtype object"):
        take_snapshot({"a": np.array([object()])})
    with pytest.raises(CheckpointError, match="not allowed"):
        take_snapshot({RNG_NAME: 1})


def test_restore_errors_and_strictness() -> None:
    arr = np.zeros(3)
    snap = take_snapshot({"arr": arr, "lin": torch.nn.Linear(2, 2), "v": 5}, rng=False)
    with pytest.raises(CheckpointError, match="not registered"):
        restore_snapshot({"arr": arr}, snap.tensors, snap.skeleton)
    assert restore_snapshot({"arr": arr}, snap.tensors, snap.skeleton, strict=False) == {"v": 5}
    with pytest.raises(CheckpointError, match="in place"):
        restore_snapshot(
            {"arr": np.zeros(4), "lin": torch.nn.Linear(2, 2)}, snap.tensors, snap.skeleton
        )
    with pytest.raises(CheckpointError, match="could not restore 'lin'"):
        restore_snapshot({"arr": arr, "lin": torch.nn.Linear(3, 2)}, snap.tensors, snap.skeleton)
    with pytest.raises(CheckpointError, match="missing tensor"):
        restore_snapshot({"arr": arr, "lin": torch.nn.Linear(2, 2)}, {}, snap.skeleton)


def test_non_contiguous_and_special_tensors() -> None:
    base = torch.arange(12.0).reshape(3, 4)
    objs = {
        "t": base.t(),
        "c": torch.randn(3, dtype=torch.complex64).conj(),
        "b": torch.tensor([True, False]),
    }
    snap = take_snapshot(objs, rng=False)
    expected = {k: v.clone() for k, v in objs.items()}
    tensors, skeleton = through_codec(snap, "lossless", {})
    with torch.no_grad():
        for v in objs.values():
            v.zero_()
    restore_snapshot(objs, tensors, skeleton)
    for k, v in objs.items():
        assert torch.equal(v.resolve_conj(), expected[k].resolve_conj()), k


def test_modules_do_not_import_torch() -> None:
    code = (
        "import sys\n"
        "import flordb.checkpoint.snapshot, flordb.checkpoint.codecs, flordb.checkpoint.blobstore, flordb.checkpoint.policy\n"
        "import numpy as np\n"
        "from flordb.checkpoint.snapshot import take_snapshot, restore_snapshot\n"
        "a = np.ones(3); s = take_snapshot({'a': a, 'v': (1, 2)})\n"
        "a[:] = 0; restore_snapshot({'a': a}, s.tensors, s.skeleton)\n"
        "assert a.sum() == 3\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_grad_scaler_is_captured_without_item(monkeypatch: pytest.MonkeyPatch) -> None:
    model = torch.nn.Linear(4, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10, growth_interval=2)
    for _ in range(3):
        opt.zero_grad()
        scaler.scale(model(torch.randn(3, 4)).sum()).backward()
        scaler.step(opt)
        scaler.update()
    expected = scaler.state_dict()
    assert expected["_growth_tracker"] == 1 and expected["scale"] == 2.0**11

    def no_state_dict(self):  # it would call .item(): a GPU sync
        raise AssertionError("state_dict() called")

    with monkeypatch.context() as m:
        m.setattr(torch.amp.GradScaler, "state_dict", no_state_dict)
        snap = take_snapshot({"scaler": scaler}, rng=False)
    tensors, skeleton = through_codec(snap, "lossless", {})
    fresh = torch.amp.GradScaler("cpu")
    restore_snapshot({"scaler": fresh}, tensors, skeleton)
    assert fresh.state_dict() == expected
    assert type(fresh.state_dict()["scale"]) is float
    assert type(fresh.state_dict()["_growth_tracker"]) is int
