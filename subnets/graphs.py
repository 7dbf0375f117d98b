"""A materialised subnet's forward as one TorchScript graph that runs without the GIL.

An eager forward is a few hundred small torch calls; after each one the calling thread takes
the GIL back before Python dispatches the next. In a process where other threads run Python
(the daemon's server, control loop and monitors; an app's own threads), every re-take can wait
for the interpreter's switch interval, and a forward stalls by that much per op (measured:
5 ms alone, over 500 ms beside a computing Python thread). Calling a traced ``ScriptModule``
releases the GIL once for the whole graph, so other threads' Python no longer stretches it.

The trace keeps the weights shared: tensors the forward reads become graph constants that
*are* the module's tensors (views of the supernet's storage), which :func:`trace_graph`
checks storage by storage; it refuses a graph that would hold a copy, or that does not
reproduce the eager output exactly. The graph is specialised to the traced input shape
(batch 1 at the subnet's resolution, what the daemon feeds after resizing); other shapes
run the eager module.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

log = logging.getLogger(__name__)

#: calls that let TorchScript's profiling executor settle before a graph serves (it optimises
#: the graph during its first runs; those must not be an app's first inferences)
WARMUP_CALLS = 3


@dataclass(frozen=True)
class Graph:
    """A traced forward for inputs of exactly ``shape``."""

    module: Any  # torch.jit.ScriptModule
    shape: tuple[int, ...]

    def accepts(self, x: Tensor) -> bool:
        return tuple(x.shape) == self.shape


def _storage(t: Tensor) -> int:
    return int(t.untyped_storage().data_ptr())


def graph_constants(script: Any) -> list[Tensor]:
    """The tensor constants of a traced module's graph (what it reads besides its input)."""
    out: list[Tensor] = []
    for node in script.inlined_graph.nodes():
        if node.kind() == "prim::Constant" and node.output().type().kind() == "TensorType":
            value = node.output().toIValue()
            if isinstance(value, Tensor):
                out.append(value)
    return out


def trace_graph(
    module: nn.Module, shape: tuple[int, ...], device: torch.device, tensors: Iterable[Tensor]
) -> Graph | None:
    """Trace ``module`` for inputs of ``shape``; None (the eager forward serves) when that fails.

    ``tensors`` are the tensors the eager forward reads; every constant of the graph must share
    storage with one of them, so the graph adds no weight bytes.
    """
    example = torch.zeros(shape, device=device)
    try:
        with torch.inference_mode(), warnings.catch_warnings():
            # TracerWarning: the batch-1 branch is baked in, which is why the graph takes one shape;
            # DeprecationWarning: torch.jit is in maintenance, still shipped and working in torch 2.x
            warnings.simplefilter("ignore")
            script = torch.jit.trace(module, example, check_trace=False)
            for _ in range(WARMUP_CALLS):
                script(example)
            probe = torch.rand(shape, generator=torch.Generator().manual_seed(0)).to(device)
            same = torch.equal(script(probe), module(probe))
    except Exception as exc:  # noqa: BLE001 - any family the tracer cannot follow keeps its eager forward
        log.debug("no graph for %s: %s", type(module).__name__, exc)
        return None
    if not same:
        log.warning("traced graph of %s differs from its eager forward; serving eager", type(module).__name__)
        return None
    shared = {_storage(t) for t in tensors}
    copies = [c for c in graph_constants(script) if _storage(c) not in shared]
    if copies:
        log.warning("traced graph of %s would hold %d tensor copies; serving eager", type(module).__name__, len(copies))
        return None
    return Graph(script, tuple(shape))
