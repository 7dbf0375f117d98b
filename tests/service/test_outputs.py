"""Through a real daemon, every reply is the output of the subnet it names, for that input.

The tiny catalog's subnets carry calibrated BN statistics, so outputs depend on the input and
differ between subnets: a daemon that ran another subnet than the one it names, or skipped
the resize to the subnet's resolution, fails here.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.service.harness import Daemon

# same-subnet outputs of two processes may differ in the last bits (intra-op thread count);
# distinct subnets, or a skipped resize, differ by orders of magnitude more (checked below)
ATOL = 1e-4
DIFFERENT = 1e-2


def image(resolution: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((1, 3, resolution, resolution), dtype=np.float32)


@pytest.fixture(scope="module")
def local(tiny_catalog: Path) -> Iterator[Any]:
    """The in-process reference: the catalog's pool, and the daemon's documented resize."""
    import torch

    import subnets.ofa_compat
    from dynofa.catalog import load_catalog

    subnets.ofa_compat.install()
    from subnets.pool import SubnetPool

    catalog = load_catalog(tiny_catalog)
    with SubnetPool.from_catalog(catalog) as pool:

        def run(x: np.ndarray, subnet: str, resize: bool = True) -> np.ndarray:
            tensor = torch.from_numpy(x.copy())
            r = catalog.get(subnet).resolution
            if resize and tuple(tensor.shape[2:]) != (r, r):
                tensor = torch.nn.functional.interpolate(tensor, size=(r, r), mode="bilinear", align_corners=False)
            return np.asarray(pool.infer(tensor, subnet=subnet).output.numpy())

        run.catalog = catalog  # type: ignore[attr-defined]
        yield run


def assert_is_output_of(reply: Any, sid: str, x: np.ndarray, local: Any) -> None:
    """``reply`` names ``sid`` and is its output for ``x``, and no other subnet's."""
    assert reply.subnet == sid
    np.testing.assert_allclose(reply.output, local(x, sid), rtol=0, atol=ATOL)
    for other in local.catalog.ids:
        if other != sid:
            assert np.abs(reply.output - local(x, other)).max() > DIFFERENT


def test_test_models_depend_on_input_and_differ_between_subnets(local: Any) -> None:
    """Guards the fixture itself: with untouched BN every subnet answered the bias."""
    ids = local.catalog.ids
    x, y = image(40, 1), image(40, 2)
    outputs = {sid: local(x, sid) for sid in ids}
    for sid in ids:
        assert np.abs(outputs[sid] - local(y, sid)).max() > DIFFERENT, f"{sid} ignores its input"
    for a in ids:
        for b in ids:
            if a < b:
                assert np.abs(outputs[a] - outputs[b]).max() > DIFFERENT, f"{a} and {b} answer alike"


def test_each_forced_subnet_reply_is_that_subnets_output(daemon: Daemon, local: Any) -> None:
    c = daemon.client()
    c.register("out-forced")
    try:
        for k, sid in enumerate(local.catalog.ids):
            x = image(local.catalog.get(sid).resolution, seed=10 + k)
            assert_is_output_of(c.infer("out-forced", x, subnet=sid), sid, x, local)
    finally:
        c.unregister("out-forced")


def test_decided_subnet_reply_matches_the_subnet_it_names(daemon: Daemon, local: Any) -> None:
    c = daemon.client()
    c.register("out-decided")
    try:
        x = image(36, seed=5)
        reply = c.infer("out-decided", x)
        assert reply.subnet in local.catalog.ids
        np.testing.assert_allclose(reply.output, local(x, reply.subnet), rtol=0, atol=ATOL)
    finally:
        c.unregister("out-decided")


def test_input_is_resized_to_the_subnets_resolution(daemon: Daemon, local: Any) -> None:
    c = daemon.client()
    c.register("out-resize")
    try:
        for sid in local.catalog.ids:
            x = image(40, seed=7)  # no subnet of the tiny catalog runs at 40 px
            reply = c.infer("out-resize", x, subnet=sid)
            np.testing.assert_allclose(reply.output, local(x, sid), rtol=0, atol=ATOL)
            # the net itself accepts 40 px (global pooling): only the resize tells the two apart
            assert np.abs(reply.output - local(x, sid, resize=False)).max() > DIFFERENT
    finally:
        c.unregister("out-resize")
