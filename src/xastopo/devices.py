"""Is a GPU visible? Asked of the CUDA driver directly, without importing torch or onnxruntime.

onnxruntime-gpu lists CUDAExecutionProvider as available even on a machine with no GPU and then logs
loud errors when asked for it; this check decides before asking.
"""

from __future__ import annotations

import ctypes


def gpu_visible() -> bool:
    """True when the CUDA driver reports at least one device."""
    try:
        lib = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    count = ctypes.c_int(0)
    try:
        return lib.cuInit(0) == 0 and lib.cuDeviceGetCount(ctypes.byref(count)) == 0 and count.value > 0
    except AttributeError:
        return False
