// CUDA schedule of the per-sample math in spear/sampler.h. Host-side API only (no CUDA
// types), so the bindings compile without the CUDA headers.
#pragma once

#include <cstdint>
#include <string>

#include "spear/sampler.h"

namespace spear::cuda {

// True when the CUDA runtime finds at least one device (false with no driver or no GPU).
bool available();
int device_count();
std::string device_name(int device);

// Largest batch size b the CUDA kernel handles (per-thread scratch is sized at compile time).
constexpr int kMaxB = 64;

// Launches the sampler on `stream` (a cudaStream_t as an integer; 0 = legacy default).
// All pointers are device pointers: L (m x b, row-major), thresh (m), outputs with room for
// `capacity` candidates, and `count` (one uint64, zeroed by the caller) that receives the
// number of accepted samples (which may exceed capacity; candidates past it are dropped).
// Asynchronous: the caller synchronizes (e.g. by reading `count`).
template <typename T>
void sample(const T* L, const T* thresh, const SamplerParams& params, uint64_t offset,
            int64_t num_samples, T* out_q, int32_t* out_zeros, int64_t* out_index,
            unsigned long long* count, int64_t capacity, uintptr_t stream);

}  // namespace spear::cuda
