"""Type stubs for the compiled module ``spear._core`` (csrc/bindings.cpp).

Every entry point checks its arguments and raises ValueError / TypeError naming the bad
one before any work starts."""
from typing import Any

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
    Returns (q, zeros, index, evaluated, accepted_total); the lowest max_candidates
    accepted sample indices, in order."""

def emulate_cuda_schedule(
    L: npt.NDArray[np.floating], thresh: npt.NDArray[np.floating], seed: int, offset: int,
    num_samples: int, min_zeros: int, probe: int, probe_min: int, max_candidates: int,
    grid: int, chunk_tiles: int, order_seed: int,
) -> tuple[npt.NDArray[np.floating], npt.NDArray[np.int32], npt.NDArray[np.int64], int, int]:
    """The CUDA kernel's ordered-compaction schedule run on the host with blocks in a
    shuffled order (tests). Returns what sample_cpu returns."""

def philox4x32_10(counter: list[int], key: list[int]) -> list[int]:
    """The counter-based generator both kernels use."""

def cpu_max_threads() -> int: ...
def cpu_simd() -> str:
    """The per-sample path the CPU kernel uses here: 'avx512', 'generic' or 'scalar'."""
def set_cpu_simd(name: str) -> str:
    """Force the CPU kernel's path ('auto', 'scalar', 'generic', 'avx512'; ValueError for
    an unknown name or AVX-512 on a CPU without it); returns the previous one. Every path
    gives the same bits."""
def cuda_device_count() -> int: ...
def cuda_unavailable_reason() -> str:
    """Why no CUDA device can be used ('' when one can): no driver, no device, or a
    driver older than the statically linked CUDA runtime."""
def cuda_runtime_version() -> int: ...
def cuda_driver_version() -> int: ...
def cuda_device_name(device: int = 0) -> str: ...
def cuda_kernel_info(dtype: str, b: int, m: int = 0) -> dict[str, int]:
    """Pass 1 for (dtype, b) and an L of m rows: bmax, registers, local_bytes, shared_bytes
    (> 0: the scratch lives in shared memory), threads_per_block, blocks_per_sm, sms."""
def sample_cuda(
    L: Any, thresh: Any, seed: int, offset: int, num_samples: int, min_zeros: int, probe: int,
    probe_min: int, out_q: Any, out_zeros: Any, out_index: Any, count: Any, stream: int,
) -> None:
    """Launch the CUDA sampler (asynchronous on ``stream``) on device arrays given through
    ``__cuda_array_interface__``: L (m, b) and thresh (m,) float32/float64, out_q
    (capacity, b), out_zeros (capacity,) int32, out_index (capacity,) int64, count (1,)
    uint64 zeroed. The outputs receive the lowest-index accepted samples in order."""
