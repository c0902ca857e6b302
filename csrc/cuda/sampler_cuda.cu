#include "sampler_cuda.h"

#include <cuda_runtime.h>

#include <cstdlib>
#include <stdexcept>
#include <string>

#include "spear/compaction.h"

namespace spear::cuda {

namespace {

using compaction::kChunkTiles;
using compaction::kScanThreads;
using compaction::kTile;

void check(cudaError_t err, const char* what) {
  if (err != cudaSuccess)
    throw std::runtime_error(std::string("spear CUDA: ") + what + ": " + cudaGetErrorString(err));
}

// Pass 1 (see spear/compaction.h): one thread per sample of a tile, grid-stride over tiles.
// Scratch lives in per-thread arrays sized for BMAX; templating on BMAX keeps small
// batches from paying for the largest scratch.
template <typename T, int BMAX>
__global__ void __launch_bounds__(kTile)
    evaluate_kernel(const T* __restrict__ L, const T* __restrict__ thresh, SamplerParams params,
                    uint64_t first, int64_t chunk_size, int64_t num_tiles,
                    int32_t* __restrict__ zbuf, int32_t* __restrict__ tile_count) {
  T A[(BMAX - 1) * BMAX > 0 ? (BMAX - 1) * BMAX : 1];
  T q[BMAX];
  int rows[BMAX];
  for (int64_t tile = blockIdx.x; tile < num_tiles; tile += gridDim.x) {  // block-uniform
    const int32_t z = compaction::evaluate_lane(L, thresh, params, first, chunk_size, tile,
                                                static_cast<int>(threadIdx.x), zbuf, A, rows, q);
    const int n = __syncthreads_count(z >= 0);
    if (threadIdx.x == 0) tile_count[tile] = n;
  }
}

// Pass 1 with the scratch in shared memory instead of local memory. The H100 profile of
// the local-memory kernel (ncu, b = 20, m = 200, fp32, 2026-11-24) showed 83% of warp
// cycles stalled on L1TEX: 1,536 threads x 4.3 KB of stack per SM cannot stay in a 256 KB
// L1, so the elimination's every access went to L2 or DRAM. Here each thread's A, q and
// rows live in one block-wide shared buffer, each array interleaved with an odd stride
// (no bank conflicts across a warp); the per-sample math is the same code, so the bits
// are. shared_scratch() below decides where it pays (at most fp32 b <= 20, fp64 b <= 14
// fit an H100's shared memory); SPEAR_CUDA_SCRATCH=local forces the other kernel.
struct SharedLayout {
  int a_stride = 0, q_stride = 0, rows_stride = 0;  // elements per thread, each odd
  size_t bytes = 0;                                   // whole block
};

inline int odd(int n) { return n | 1; }

template <typename T>
SharedLayout shared_layout(int b) {
  SharedLayout s;
  s.a_stride = odd((b - 1) * b > 0 ? (b - 1) * b : 1);
  s.q_stride = odd(b);
  s.rows_stride = odd(b);
  s.bytes = static_cast<size_t>(kTile) *
            ((s.a_stride + s.q_stride) * sizeof(T) + s.rows_stride * sizeof(int));
  return s;
}

template <typename T>
__global__ void __launch_bounds__(kTile)
    evaluate_kernel_shared(const T* __restrict__ L, const T* __restrict__ thresh,
                           SamplerParams params, SharedLayout layout, uint64_t first,
                           int64_t chunk_size, int64_t num_tiles, int32_t* __restrict__ zbuf,
                           int32_t* __restrict__ tile_count) {
  extern __shared__ __align__(16) unsigned char scratch[];
  T* A = reinterpret_cast<T*>(scratch) + threadIdx.x * layout.a_stride;
  T* q = reinterpret_cast<T*>(scratch) + kTile * layout.a_stride + threadIdx.x * layout.q_stride;
  int* rows = reinterpret_cast<int*>(reinterpret_cast<T*>(scratch) +
                                     kTile * (layout.a_stride + layout.q_stride)) +
              threadIdx.x * layout.rows_stride;
  for (int64_t tile = blockIdx.x; tile < num_tiles; tile += gridDim.x) {  // block-uniform
    const int32_t z = compaction::evaluate_lane(L, thresh, params, first, chunk_size, tile,
                                                static_cast<int>(threadIdx.x), zbuf, A, rows, q);
    const int n = __syncthreads_count(z >= 0);
    if (threadIdx.x == 0) tile_count[tile] = n;
  }
}

// Pass 2: one block of kScanThreads.
__global__ void __launch_bounds__(kScanThreads)
    scan_kernel(const int32_t* __restrict__ tile_count, int64_t num_tiles,
                unsigned long long* __restrict__ count, int64_t* __restrict__ tile_offset) {
  __shared__ int64_t run[kScanThreads];
  const int t = static_cast<int>(threadIdx.x);
  run[t] = compaction::scan_run_sum(tile_count, num_tiles, t);
  __syncthreads();
  if (t == 0) *count = compaction::scan_runs(run, *count);
  __syncthreads();
  compaction::scan_write(tile_count, num_tiles, t, run[t], tile_offset);
}

// Pass 3: accepted samples below the capacity are evaluated again and written in order.
template <typename T, int BMAX>
__global__ void __launch_bounds__(kTile)
    write_kernel(const T* __restrict__ L, const T* __restrict__ thresh, SamplerParams params,
                 uint64_t first, int64_t num_tiles, const int32_t* __restrict__ zbuf,
                 const int64_t* __restrict__ tile_offset, int64_t capacity, T* __restrict__ out_q,
                 int32_t* __restrict__ out_zeros, int64_t* __restrict__ out_index) {
  T A[(BMAX - 1) * BMAX > 0 ? (BMAX - 1) * BMAX : 1];
  T q[BMAX];
  int rows[BMAX];
  for (int64_t tile = blockIdx.x; tile < num_tiles; tile += gridDim.x) {
    if (tile_offset[tile] >= capacity) continue;
    const int64_t slot = compaction::output_slot(zbuf, tile_offset, tile,
                                                 static_cast<int>(threadIdx.x), capacity);
    if (slot >= 0)
      compaction::write_lane(L, thresh, params, first, tile, static_cast<int>(threadIdx.x), slot,
                             A, rows, q, out_q, out_zeros, out_index);
  }
}

// Blocks for a grid-stride kernel: as many as are resident at once (one full wave), from
// the occupancy API rather than an assumed 2048 threads per SM: with 40 (float) / 55
// (double) registers per thread only 1,584 / 1,188 of the 2,112 blocks the old fixed
// 16 blocks/SM launched were resident on an H100, leaving a second partial wave.
template <typename Kernel>
int resident_blocks(Kernel kernel, int threads, size_t shared_bytes = 0) {
  int device = 0, sms = 0, per_sm = 0;
  check(cudaGetDevice(&device), "cudaGetDevice");
  check(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device), "SM count");
  check(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, threads, shared_bytes),
        "occupancy");
  return (per_sm > 0 ? per_sm : 1) * sms;
}

// L1 and shared memory are one array per SM: on Hopper 256 KB, of which at most 228 KB
// can be shared; this is the part that always stays L1.
constexpr size_t kL1Reserve = 28 * 1024;

// The shared-memory layout for (b, m) when pass 1 should use it (else bytes = 0), with the
// kernel's dynamic shared-memory limit raised to it. Measured on an H100 (2026-11-24,
// bench/gpu_scratch_ab.py, same run, identical results):
//   fp32 b = 20, m = 200: 1.05e8 samples/s shared, 3.6e7 local (x2.9); fp64 b = 12: x1.8;
//   fp32 b = 8: x0.85, the BMAX = 8 kernel's 336 B of local scratch is cheap: stay local;
//   fp32 b = 20, m = 2000: x0.35, L (160 KB) no longer fits the L1 the scratch leaves.
// So: shared for b > 8 when the scratch and L (with its thresholds) fit one SM's L1.
template <typename T>
SharedLayout shared_scratch(int b, int m) {
  SharedLayout s = shared_layout<T>(b);
  const char* env = std::getenv("SPEAR_CUDA_SCRATCH");
  int device = 0, optin = 0, per_sm = 0;
  check(cudaGetDevice(&device), "cudaGetDevice");
  check(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device),
        "shared memory per block");
  check(cudaDeviceGetAttribute(&per_sm, cudaDevAttrMaxSharedMemoryPerMultiprocessor, device),
        "shared memory per SM");
  const size_t l_bytes = static_cast<size_t>(m) * (b + 1) * sizeof(T);
  if ((env && std::string(env) == "local") || b <= 8 || s.bytes > static_cast<size_t>(optin) ||
      s.bytes + l_bytes > static_cast<size_t>(per_sm) + kL1Reserve)
    return {};
  check(cudaFuncSetAttribute(evaluate_kernel_shared<T>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                             static_cast<int>(s.bytes)),
        "shared memory limit");
  return s;
}

void check_device_pointer(const void* ptr, const char* name) {
  int device = 0;
  check(cudaGetDevice(&device), "cudaGetDevice");
  cudaPointerAttributes attr{};
  if (cudaPointerGetAttributes(&attr, ptr) != cudaSuccess) {
    cudaGetLastError();
    throw std::invalid_argument(std::string("spear CUDA sampler: ") + name +
                                " is not a CUDA device pointer");
  }
  if (attr.type != cudaMemoryTypeDevice && attr.type != cudaMemoryTypeManaged)
    throw std::invalid_argument(std::string("spear CUDA sampler: ") + name +
                                " is not in device memory");
  if (attr.type == cudaMemoryTypeDevice && attr.device != device)
    throw std::invalid_argument(std::string("spear CUDA sampler: ") + name + " lives on device " +
                                std::to_string(attr.device) + " but the current device is " +
                                std::to_string(device) +
                                " (run under `with cupy.cuda.Device(...)` of the array)");
}

struct Scratch {
  int32_t* zbuf = nullptr;
  int32_t* tile_count = nullptr;
  int64_t* tile_offset = nullptr;
  cudaStream_t stream = nullptr;
  ~Scratch() {
    // Stream-ordered frees: safe while the kernels that use them are still queued.
    if (zbuf) cudaFreeAsync(zbuf, stream);
    if (tile_count) cudaFreeAsync(tile_count, stream);
    if (tile_offset) cudaFreeAsync(tile_offset, stream);
  }
};

template <typename T, int BMAX>
void launch(const T* L, const T* thresh, const SamplerParams& params, uint64_t offset,
            int64_t num_samples, T* out_q, int32_t* out_zeros, int64_t* out_index,
            unsigned long long* count, int64_t capacity, cudaStream_t stream) {
  if (num_samples <= 0) return;
  const int64_t total_tiles = (num_samples + kTile - 1) / kTile;
  // SPEAR_CUDA_CHUNK_TILES (tests, compute-sanitizer runs): smaller chunks, so that a short
  // run still crosses chunk boundaries.
  int64_t max_chunk = kChunkTiles;
  if (const char* env = std::getenv("SPEAR_CUDA_CHUNK_TILES")) {
    const long long v = std::atoll(env);
    if (v >= 1 && v <= kChunkTiles) max_chunk = v;
  }
  const int64_t chunk_tiles = total_tiles < max_chunk ? total_tiles : max_chunk;
  Scratch s;
  s.stream = stream;
  check(cudaMallocAsync(&s.zbuf, sizeof(int32_t) * chunk_tiles * kTile, stream), "scratch");
  check(cudaMallocAsync(&s.tile_count, sizeof(int32_t) * chunk_tiles, stream), "scratch");
  check(cudaMallocAsync(&s.tile_offset, sizeof(int64_t) * chunk_tiles, stream), "scratch");
  const SharedLayout shared = shared_scratch<T>(params.b, params.m);
  const int eval_blocks = shared.bytes
                              ? resident_blocks(evaluate_kernel_shared<T>, kTile, shared.bytes)
                              : resident_blocks(evaluate_kernel<T, BMAX>, kTile);
  const int write_blocks = resident_blocks(write_kernel<T, BMAX>, kTile);
  for (int64_t begin = 0; begin < num_samples; begin += chunk_tiles * kTile) {
    const int64_t left = num_samples - begin;
    const int64_t size = left < chunk_tiles * kTile ? left : chunk_tiles * kTile;
    const int64_t tiles = (size + kTile - 1) / kTile;
    const uint64_t first = offset + static_cast<uint64_t>(begin);
    const int eb = static_cast<int>(tiles < eval_blocks ? tiles : eval_blocks);
    const int wb = static_cast<int>(tiles < write_blocks ? tiles : write_blocks);
    if (shared.bytes)
      evaluate_kernel_shared<T><<<eb, kTile, shared.bytes, stream>>>(
          L, thresh, params, shared, first, size, tiles, s.zbuf, s.tile_count);
    else
      evaluate_kernel<T, BMAX><<<eb, kTile, 0, stream>>>(L, thresh, params, first, size, tiles,
                                                        s.zbuf, s.tile_count);
    check(cudaGetLastError(), "sampler kernel launch (pass 1)");
    scan_kernel<<<1, kScanThreads, 0, stream>>>(s.tile_count, tiles, count, s.tile_offset);
    check(cudaGetLastError(), "sampler kernel launch (pass 2)");
    write_kernel<T, BMAX><<<wb, kTile, 0, stream>>>(L, thresh, params, first, tiles, s.zbuf,
                                                   s.tile_offset, capacity, out_q, out_zeros,
                                                   out_index);
    check(cudaGetLastError(), "sampler kernel launch (pass 3)");
  }
}

template <typename T, int BMAX>
KernelInfo info_of(int b, int m) {
  KernelInfo k;
  cudaFuncAttributes a{};
  const SharedLayout shared = shared_scratch<T>(b, m);
  if (shared.bytes)
    check(cudaFuncGetAttributes(&a, evaluate_kernel_shared<T>), "cudaFuncGetAttributes");
  else
    check(cudaFuncGetAttributes(&a, evaluate_kernel<T, BMAX>), "cudaFuncGetAttributes");
  k.registers = a.numRegs;
  k.local_bytes = static_cast<int>(a.localSizeBytes);
  k.shared_bytes = static_cast<int>(shared.bytes);
  int device = 0;
  check(cudaGetDevice(&device), "cudaGetDevice");
  check(cudaDeviceGetAttribute(&k.sms, cudaDevAttrMultiProcessorCount, device), "SM count");
  if (shared.bytes)
    check(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&k.blocks_per_sm, evaluate_kernel_shared<T>,
                                                        kTile, shared.bytes),
          "occupancy");
  else
    check(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&k.blocks_per_sm, evaluate_kernel<T, BMAX>,
                                                        kTile, 0),
          "occupancy");
  k.threads_per_block = kTile;
  k.bmax = BMAX;
  return k;
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

std::string unavailable_reason() {
  int n = 0;
  const cudaError_t err = cudaGetDeviceCount(&n);
  if (err == cudaSuccess) return n > 0 ? "" : "no CUDA device was found";
  cudaGetLastError();
  int driver = 0;
  cudaDriverGetVersion(&driver);  // 0 when no driver is installed
  // With no driver at all the runtime also reports cudaErrorInsufficientDriver: the
  // driver version (0) tells the two apart.
  if (driver == 0) return "no NVIDIA driver was found (no CUDA device can be used)";
  if (err == cudaErrorInsufficientDriver) {
    return "the NVIDIA driver supports CUDA " + std::to_string(driver / 1000) + "." +
           std::to_string((driver % 1000) / 10) + " but this module was built with the CUDA " +
           std::to_string(CUDART_VERSION / 1000) + "." +
           std::to_string((CUDART_VERSION % 1000) / 10) +
           " runtime (linked statically): update the driver, or rebuild spear with a CUDA "
           "toolkit the driver supports";
  }
  if (err == cudaErrorNoDevice)
    return std::string("no CUDA device or driver was found (") + cudaGetErrorString(err) + ")";
  return std::string("the CUDA runtime failed to start: ") + cudaGetErrorString(err);
}

std::string device_name(int device) {
  cudaDeviceProp prop{};
  check(cudaGetDeviceProperties(&prop, device), "cudaGetDeviceProperties");
  return prop.name;
}

int runtime_version() { return CUDART_VERSION; }

int driver_version() {
  int v = 0;
  cudaDriverGetVersion(&v);
  return v;
}

int bmax_for(int b) { return b <= 8 ? 8 : b <= 16 ? 16 : b <= 32 ? 32 : 64; }

KernelInfo kernel_info(bool float64, int b, int m) {
  if (b < 1 || b > kMaxB) throw std::invalid_argument("b must be in [1, 64]");
  switch (bmax_for(b)) {
    case 8: return float64 ? info_of<double, 8>(b, m) : info_of<float, 8>(b, m);
    case 16: return float64 ? info_of<double, 16>(b, m) : info_of<float, 16>(b, m);
    case 32: return float64 ? info_of<double, 32>(b, m) : info_of<float, 32>(b, m);
    default: return float64 ? info_of<double, 64>(b, m) : info_of<float, 64>(b, m);
  }
}

template <typename T>
void sample(const T* L, const T* thresh, const SamplerParams& params, uint64_t offset,
            int64_t num_samples, T* out_q, int32_t* out_zeros, int64_t* out_index,
            unsigned long long* count, int64_t capacity, uintptr_t stream_handle) {
  if (params.b < 1 || params.b > kMaxB)
    throw std::invalid_argument("spear CUDA sampler: batch size must be in [1, 64]");
  check_device_pointer(L, "L");
  check_device_pointer(thresh, "thresh");
  check_device_pointer(count, "count");
  if (capacity > 0) {
    check_device_pointer(out_q, "out_q");
    check_device_pointer(out_zeros, "out_zeros");
    check_device_pointer(out_index, "out_index");
  }
  auto stream = reinterpret_cast<cudaStream_t>(stream_handle);
  switch (bmax_for(params.b)) {
    case 8:
      launch<T, 8>(L, thresh, params, offset, num_samples, out_q, out_zeros, out_index, count,
                   capacity, stream);
      break;
    case 16:
      launch<T, 16>(L, thresh, params, offset, num_samples, out_q, out_zeros, out_index, count,
                    capacity, stream);
      break;
    case 32:
      launch<T, 32>(L, thresh, params, offset, num_samples, out_q, out_zeros, out_index, count,
                    capacity, stream);
      break;
    default:
      launch<T, 64>(L, thresh, params, offset, num_samples, out_q, out_zeros, out_index, count,
                    capacity, stream);
  }
}

template void sample<float>(const float*, const float*, const SamplerParams&, uint64_t, int64_t,
                            float*, int32_t*, int64_t*, unsigned long long*, int64_t, uintptr_t);
template void sample<double>(const double*, const double*, const SamplerParams&, uint64_t,
                             int64_t, double*, int32_t*, int64_t*, unsigned long long*, int64_t,
                             uintptr_t);

}  // namespace spear::cuda
