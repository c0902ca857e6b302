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
// Why available() is false, in words ("" when it is true): no device, no driver, or a
// driver older than the CUDA runtime linked into this module.
std::string unavailable_reason();
std::string device_name(int device);
int runtime_version();  // CUDART_VERSION this module was built with (e.g. 13000)
int driver_version();   // what the installed driver supports (0: no driver)

// Largest batch size b the CUDA kernel handles (per-thread scratch is sized at compile time).
constexpr int kMaxB = 64;

// Launch configuration of the pass-1 kernel for (dtype, b) and an L of m rows, from the
// CUDA runtime (m = 0: as if L took no cache).
struct KernelInfo {
  int bmax = 0, registers = 0, local_bytes = 0, threads_per_block = 0, blocks_per_sm = 0, sms = 0;
  int shared_bytes = 0;  // > 0: the scratch lives in shared memory (this many bytes a block)
};
KernelInfo kernel_info(bool float64, int b, int m);

// Launches the sampler on `stream` (a cudaStream_t as an integer; 0 = legacy default).
// All pointers are device pointers on the current device (checked): L (m x b, row-major),
// thresh (m), outputs with room for `capacity` candidates, and `count` (one uint64,
// zeroed by the caller) that receives the number of accepted samples (which may exceed
// capacity). The outputs hold the min(count, capacity) accepted samples of lowest index,
// in index order (ordered compaction, spear/compaction.h). Asynchronous: the caller
// synchronizes (e.g. by reading `count`).
template <typename T>
void sample(const T* L, const T* thresh, const SamplerParams& params, uint64_t offset,
            int64_t num_samples, T* out_q, int32_t* out_zeros, int64_t* out_index,
            unsigned long long* count, int64_t capacity, uintptr_t stream);

}  // namespace spear::cuda
