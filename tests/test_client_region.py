"""ClientRegion's output slice: what the last reply named is read again without a new view, and nothing else."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dynofa.shm import ClientRegion


def _put(region: ClientRegion, offset: int, values: np.ndarray) -> None:
    region._map[offset : offset + values.nbytes] = values.tobytes()


def test_the_output_is_read_as_each_reply_names_it(tmp_path: Path) -> None:
    region = ClientRegion(4096, shm_dir=tmp_path)
    try:
        base = region.out_offset
        first = np.arange(10, dtype=np.float32).reshape(1, 10)
        _put(region, base, first)
        fields = {"offset": base, "bytes": 40, "dtype": "float32", "shape": [1, 10]}
        assert np.array_equal(region.read_output(fields), first)
        out = region.read_output(dict(fields, shape=[1, 10]))
        out[0, 0] = 99.0  # a copy: the slice is reused by the next inference
        assert region.read_output(fields)[0, 0] == 0.0
        for named in ({"offset": base, "bytes": 40, "dtype": "float32", "shape": [2, 5]},
                      {"offset": base, "bytes": 40, "dtype": "int32", "shape": [1, 10]},
                      {"offset": base + 64, "bytes": 24, "dtype": "float64", "shape": [3]},
                      {"offset": base, "bytes": 20, "dtype": "float32", "shape": [5]}):  # fmt: skip
            values = np.arange(named["bytes"] // np.dtype(named["dtype"]).itemsize, dtype=named["dtype"]) + 7
            _put(region, named["offset"], values)
            got = region.read_output(named)
            assert got.dtype == np.dtype(named["dtype"]) and got.shape == tuple(named["shape"])
            assert np.array_equal(got.ravel(), values)
    finally:
        region.close()
    assert region._map.closed  # no view the region kept holds the mapping


def test_an_input_view_is_known_by_identity_and_any_other_array_by_its_address(tmp_path: Path) -> None:
    region = ClientRegion(3 * 8 * 8 * 4, shm_dir=tmp_path)
    try:
        view = region.input_view((1, 3, 8, 8), np.dtype(np.float32))
        assert region.holds_input(view) and region.holds_input(view.reshape(3, 8, 8))
        assert not region.holds_input(np.zeros((1, 3, 8, 8), np.float32))
        assert not region.holds_input(view[:, 1:])  # not at offset 0
        del view
    finally:
        region.close()
    assert region._map.closed
