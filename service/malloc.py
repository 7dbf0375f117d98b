"""Keep the memory a forward frees for the next forward (glibc malloc tuning, set once at start).

Measured in the daemon (perf, 224-px subnet): every forward took ~2000 minor page faults, about
8 MB of activations faulted in afresh, because glibc handed the freed activations back to the
kernel between two inferences (they exceed its dynamic mmap threshold, or trim the top of the
inference thread's arena). The forward ran 1.8x slower than the same forward in a plain process.
Fixed thresholds keep freed blocks in the allocator: the daemon's resident memory grows by its
peak activations once, and forwards stop faulting.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

# mallopt parameters from <malloc.h>
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
#: blocks up to this size come from the heap, reused, never mmap'ed per allocation (glibc's max: 32 MiB)
MMAP_THRESHOLD_BYTES = 32 << 20
#: free memory at the top of a heap beyond this goes back to the kernel
TRIM_THRESHOLD_BYTES = 512 << 20


def retain_freed_memory() -> bool:
    """Fix glibc's mmap and trim thresholds; False where the C library is not glibc."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        log.debug("no mallopt in the C library (%s): allocator left as it is", name)
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    done = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1 and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES) == 1
    if not done:
        log.debug("mallopt refused the thresholds: allocator left as it is")
    return done
