// Multi-threaded CPU schedule of the per-sample math in spear/sampler.h.
#pragma once

#include <cstdint>

#include "spear/result.h"
#include "spear/sampler.h"

namespace spear::cpu {

// Evaluates samples [offset, offset + num_samples) on `num_threads` threads (<= 0: all
// cores). L is m x b row-major, thresh has m entries. Candidates come back sorted by
// sample index; at most max_candidates are kept (the lowest indices), so the result does
// not depend on the thread count.
template <typename T>
SampleResult<T> sample(const T* L, const T* thresh, const SamplerParams& params, uint64_t offset,
                       int64_t num_samples, int64_t max_candidates, int num_threads);

int max_threads();
// Which per-sample path runs on this CPU: "avx512" (lock-step lanes), "generic"
// (lock-step lanes, portable vectors) or "scalar".
const char* simd_name();

}  // namespace spear::cpu
