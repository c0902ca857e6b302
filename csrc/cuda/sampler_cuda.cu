#include "sampler_cuda.h"

#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

namespace spear::cuda {

namespace {

void check(cudaError_t err, const char* what) {
  if (err != cudaSuccess)
    throw std::runtime_error(std::string("spear CUDA: ") + what + ": " + cudaGetErrorString(err));
}

// One thread per sample, grid-stride. Scratch lives in per-thread arrays sized for BMAX;
// templating on BMAX keeps small batches from paying for the largest scratch.
template <typename T, int BMAX>
__global__ void sample_kernel(const T* __restrict__ L, const T* __restrict__ thresh,
                              SamplerParams params, uint64_t offset, int64_t num_samples,
                              T* __restrict__ out_q, int32_t* __restrict__ out_zeros,
                              int64_t* __restrict__ out_index, unsigned long long* count,
                              int64_t capacity) {
  T A[(BMAX - 1) * BMAX > 0 ? (BMAX - 1) * BMAX : 1];
  T q[BMAX];
  int rows[BMAX];
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < num_samples;
       i += stride) {
    const uint64_t s = offset + static_cast<uint64_t>(i);
    const int z = evaluate_sample(L, thresh, params, s, A, rows, q);
    if (z < 0) continue;
    const unsigned long long slot = atomicAdd(count, 1ULL);
    if (static_cast<int64_t>(slot) >= capacity) continue;
    for (int j = 0; j < params.b; ++j) out_q[slot * params.b + j] = q[j];
    out_zeros[slot] = z;
    out_index[slot] = static_cast<int64_t>(s);
  }
}

template <typename T, int BMAX>
void launch(const T* L, const T* thresh, const SamplerParams& params, uint64_t offset,
            int64_t num_samples, T* out_q, int32_t* out_zeros, int64_t* out_index,
            unsigned long long* count, int64_t capacity, cudaStream_t stream) {
  int device = 0, sms = 0;
  check(cudaGetDevice(&device), "cudaGetDevice");
  check(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device), "SM count");
  constexpr int threads = 128;
  const int64_t wanted = (num_samples + threads - 1) / threads;
  const int64_t cap = static_cast<int64_t>(sms) * 16;
  const int blocks = static_cast<int>(wanted < cap ? wanted : cap);
  if (blocks <= 0) return;
  sample_kernel<T, BMAX><<<blocks, threads, 0, stream>>>(L, thresh, params, offset, num_samples,
                                                          out_q, out_zeros, out_index, count,
                                                          capacity);
  check(cudaGetLastError(), "sampler kernel launch");
}

}  // namespace

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no driver" error
    return 0;
  }
  return n;
}

bool available() { return device_count() > 0; }

std::string device_name(int device) {
  cudaDeviceProp prop{};
  check(cudaGetDeviceProperties(&prop, device), "cudaGetDeviceProperties");
  return prop.name;
}

template <typename T>
void sample(const T* L, const T* thresh, const SamplerParams& params, uint64_t offset,
            int64_t num_samples, T* out_q, int32_t* out_zeros, int64_t* out_index,
            unsigned long long* count, int64_t capacity, uintptr_t stream_handle) {
  if (params.b < 1 || params.b > kMaxB)
    throw std::invalid_argument("spear CUDA sampler: batch size must be in [1, 64]");
  auto stream = reinterpret_cast<cudaStream_t>(stream_handle);
  const int b = params.b;
  if (b <= 8)
    launch<T, 8>(L, thresh, params, offset, num_samples, out_q, out_zeros, out_index, count,
                 capacity, stream);
  else if (b <= 16)
    launch<T, 16>(L, thresh, params, offset, num_samples, out_q, out_zeros, out_index, count,
                  capacity, stream);
  else if (b <= 32)
    launch<T, 32>(L, thresh, params, offset, num_samples, out_q, out_zeros, out_index, count,
                  capacity, stream);
  else
    launch<T, 64>(L, thresh, params, offset, num_samples, out_q, out_zeros, out_index, count,
                  capacity, stream);
}

template void sample<float>(const float*, const float*, const SamplerParams&, uint64_t, int64_t,
                            float*, int32_t*, int64_t*, unsigned long long*, int64_t, uintptr_t);
template void sample<double>(const double*, const double*, const SamplerParams&, uint64_t,
                             int64_t, double*, int32_t*, int64_t*, unsigned long long*, int64_t,
                             uintptr_t);

}  // namespace spear::cuda
