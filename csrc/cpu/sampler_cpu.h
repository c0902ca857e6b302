// Multi-threaded CPU schedule of the per-sample math in spear/sampler.h.
#pragma once

#include <cstdint>
#include <string>

#include "spear/result.h"
#include "spear/sampler.h"

namespace spear::cpu {

// Evaluates samples [offset, offset + num_samples) on `num_threads` threads (<= 0: all
// cores). L is m x b row-major, thresh has m entries. Candidates come back sorted by
// sample index; at most max_candidates are kept (the lowest indices), so the result does
// not depend on the thread count, nor on the SIMD path (each is bit-identical).
template <typename T>
SampleResult<T> sample(const T* L, const T* thresh, const SamplerParams& params, uint64_t offset,
                       int64_t num_samples, int64_t max_candidates, int num_threads);

int max_threads();

// Per-sample paths: one sample at a time (scalar), or several in lock-step across SIMD
// lanes (lockstep.inc) with AVX-512 (chosen at run time when the CPU has it) or portable
// vectors (generic: slower than scalar, kept to test the lock-step code anywhere).
enum class Simd { kScalar = 0, kGeneric = 1, kAvx512 = 2 };
// Lock-step up to this batch size (pivot rows are tracked in a 64-bit mask); above it the
// scalar path. AVX-512 lock-step measured 1.7x the scalar path at b = 64 (bench/NOTES.md).
constexpr int kLockstepMaxB = 64;
// The path the kernel uses now: "avx512", "generic" or "scalar".
const char* simd_name();
// Force a path ("auto", "scalar", "generic", "avx512"; for tests and measurements).
// Returns the previous one. Throws for an unknown name or AVX-512 on a CPU without it.
std::string set_simd(const std::string& name);

}  // namespace spear::cpu
