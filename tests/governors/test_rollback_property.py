"""Property: any sequence of DVFS requests, with or without a crash in between, restores exactly."""

from __future__ import annotations

import json
import os
import tempfile

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from governors.actuators import Actuator
from governors.platform import detect_platform
from governors.state import STATE_FILE
from tests.fakes.boards import build_board, tree_snapshot
from tests.fakes.fixtures import TMP_BASE

BOARD_NAMES = ["jetson-nano", "jetson-xavier-nx", "odroid-xu3", "odroid-xu4", "x86-rapl"]

request = st.tuples(st.sampled_from(["cpu0", "cpu1", "cpu2", "gpu"]), st.integers(min_value=1, max_value=5_000_000_000))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(BOARD_NAMES), requests=st.lists(request, min_size=1, max_size=8), crash=st.booleans())
def test_any_request_sequence_restores_byte_for_byte(name, requests, crash):
    with tempfile.TemporaryDirectory(dir=TMP_BASE) as tmp:
        board = build_board(name, os.path.join(tmp, "root"))
        before = tree_snapshot(board.root)
        p = detect_platform(board.root, hook=board.kernel)
        state_dir = os.path.join(tmp, "state")
        act = Actuator(p, state_dir)
        for target, value in requests:
            if target == "gpu":
                got = act.set_gpu_hz(value)
                if p.gpu is not None:
                    assert got in p.gpu.available_hz
            else:
                cluster = p.clusters[int(target[-1]) % len(p.clusters)]
                khz = value // 1000 or 1
                got = act.set_cluster_khz(cluster.name, khz)
                assert got is not None
                assert cluster.hw_min_khz is not None and cluster.hw_max_khz is not None
                assert cluster.hw_min_khz <= got <= cluster.hw_max_khz
                if cluster.available_khz:
                    assert got in cluster.available_khz
        path = os.path.join(state_dir, STATE_FILE)
        assert os.path.exists(path) == bool(act.touched)
        if crash and act.touched:
            with open(path) as fh:
                saved = json.load(fh)
            saved["pid"] = 2**22 + 1  # the daemon died
            with open(path, "w") as fh:
                json.dump(saved, fh)
            recovered = Actuator(detect_platform(board.root, hook=board.kernel), state_dir).recovered
            assert recovered is not None and recovered.ok
        else:
            assert act.restore().ok
        assert tree_snapshot(board.root) == before
        assert not os.path.exists(os.path.join(state_dir, STATE_FILE))
