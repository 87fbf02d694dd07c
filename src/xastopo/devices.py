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


def preload_cuda_libraries() -> None:
    """Load CUDA and cuDNN from the nvidia-* Python packages for onnxruntime-gpu (>= 1.21), if any.

    Without this, onnxruntime-gpu finds them only on the system library path; a machine whose CUDA
    comes from pip wheels (as PyTorch's does) would fall back to the CPU provider.
    """
    import onnxruntime as ort

    if hasattr(ort, "preload_dlls"):
        try:
            ort.preload_dlls()
        except Exception:  # a missing library leaves the CPU provider, which session creation reports
            pass
