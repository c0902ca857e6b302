"""Type stubs for the compiled module ``spear._core`` (csrc/bindings.cpp)."""
import numpy as np
import numpy.typing as npt

built_with_cuda: bool
cuda_max_b: int

def sample_cpu(
    L: npt.NDArray[np.floating], thresh: npt.NDArray[np.floating], seed: int, offset: int,
    num_samples: int, min_zeros: int, probe: int, probe_min: int, max_candidates: int,
    num_threads: int,
) -> tuple[npt.NDArray[np.floating], npt.NDArray[np.int32], npt.NDArray[np.int64], int, int]:
    """Evaluate samples [offset, offset+num_samples) on the CPU.
    Returns (q, zeros, index, evaluated, accepted_total)."""

def philox4x32_10(counter: list[int], key: list[int]) -> list[int]:
    """The counter-based generator both kernels use."""

def cpu_max_threads() -> int: ...
def cuda_device_count() -> int: ...
def cuda_device_name(device: int = 0) -> str: ...
def sample_cuda(
    L: int, thresh: int, dtype: str, m: int, b: int, seed: int, offset: int, num_samples: int,
    min_zeros: int, probe: int, probe_min: int, out_q: int, out_zeros: int, out_index: int,
    count: int, capacity: int, stream: int,
) -> None:
    """Launch the CUDA sampler on device pointers (asynchronous on ``stream``)."""
