// The CUDA kernel's schedule (spear/compaction.h) run on the host, one (block, thread) at a
// time, with the blocks in a shuffled order: a test of the ordered compaction that needs
// no GPU. It calls the same per-thread steps as the device kernels.
#pragma once

#include <cstdint>

#include "spear/result.h"
#include "spear/sampler.h"

namespace spear::emulation {

// grid: blocks of the emulated launch (each grid-strides over tiles); chunk_tiles: tiles
// per chunk (small values test the carry of the count between chunks); order_seed picks
// the order in which blocks (and threads within a tile) run, 0 = in order.
template <typename T>
SampleResult<T> sample_as_cuda(const T* L, const T* thresh, const SamplerParams& params,
                               uint64_t offset, int64_t num_samples, int64_t capacity, int grid,
                               int64_t chunk_tiles, uint64_t order_seed);

}  // namespace spear::emulation
