// Ordered compaction: how the CUDA kernel returns the lowest-index accepted samples, in
// sample order, whatever order its blocks run in (the CPU kernel's contract).
//
// Samples are cut into chunks of `chunk_tiles` tiles of kTile consecutive samples; a
// block handles one tile at a time (grid-stride over tiles), one thread per sample.
//   pass 1  every thread evaluates its sample and stores the zero count (-1: rejected)
//           in zbuf; the block counts its tile's accepted samples into tile_count.
//   pass 2  one block scans tile_count into absolute output offsets (base = accepted in
//           earlier chunks, kept in the device counter `count`, which it then advances).
//   pass 3  every accepted thread takes slot = tile offset + accepted lanes before it in
//           its tile; below capacity it evaluates its sample again (bit-identical: the
//           same counter-based draws and operations) and writes the candidate there.
// Slots follow sample order, so truncation at `capacity` keeps the lowest indices. The
// per-thread steps below are written once for the device kernels and for the host
// emulation (csrc/cpu/cuda_emulation.cpp) that tests them with shuffled block orders.
#pragma once

#include <cstdint>

#include "spear/hostdevice.h"
#include "spear/sampler.h"

namespace spear::compaction {

// Samples per tile = threads per block. 128: four warps, enough to hide latency per SM
// slot; the per-tile rank scan in pass 3 reads at most this many counts.
constexpr int kTile = 128;
// Tiles per chunk: 2^15 tiles = 4 Mi samples, 16 MiB of zero counts. Large enough that
// the three launches per chunk cost nothing next to ~10 ms of sampling at 4e8 samples/s.
constexpr int64_t kChunkTiles = int64_t(1) << 15;
// Threads of the one-block scan of pass 2 (each sums a contiguous run of tiles).
constexpr int kScanThreads = 1024;

// Pass 1, one thread: sample `first + tile * kTile + lane`; returns its zero count or -1
// (also for lanes past the end of the chunk) and stores it in zbuf[tile * kTile + lane].
template <typename T>
SPEAR_HD inline int32_t evaluate_lane(const T* L, const T* thresh, const SamplerParams& p,
                                      uint64_t first, int64_t chunk_size, int64_t tile, int lane,
                                      int32_t* zbuf, T* A, int* rows, T* q) {
  const int64_t i = tile * kTile + lane;
  const int32_t z = i < chunk_size
                        ? evaluate_sample(L, thresh, p, first + static_cast<uint64_t>(i), A, rows, q)
                        : -1;
  zbuf[i] = z;
  return z;
}

// Pass 2, thread t of kScanThreads, phase a: sum of its run of tile counts.
SPEAR_HD inline int64_t scan_run_sum(const int32_t* tile_count, int64_t num_tiles, int t) {
  const int64_t per = (num_tiles + kScanThreads - 1) / kScanThreads;
  int64_t s = 0;
  for (int64_t u = t * per; u < num_tiles && u < (t + 1) * per; ++u) s += tile_count[u];
  return s;
}
// Phase b (one thread): run sums -> exclusive run offsets from `base`; returns the new base.
SPEAR_HD inline uint64_t scan_runs(int64_t* run, uint64_t base) {
  uint64_t acc = base;
  for (int t = 0; t < kScanThreads; ++t) {
    const int64_t s = run[t];
    run[t] = static_cast<int64_t>(acc);
    acc += static_cast<uint64_t>(s);
  }
  return acc;
}
// Phase c, thread t: absolute output offset of every tile of its run.
SPEAR_HD inline void scan_write(const int32_t* tile_count, int64_t num_tiles, int t,
                                int64_t run_offset, int64_t* tile_offset) {
  const int64_t per = (num_tiles + kScanThreads - 1) / kScanThreads;
  int64_t acc = run_offset;
  for (int64_t u = t * per; u < num_tiles && u < (t + 1) * per; ++u) {
    tile_offset[u] = acc;
    acc += tile_count[u];
  }
}

// Pass 3, one thread: the output slot of lane `lane` of `tile`, or -1 when its sample was
// rejected or falls past the capacity.
SPEAR_HD inline int64_t output_slot(const int32_t* zbuf, const int64_t* tile_offset, int64_t tile,
                                    int lane, int64_t capacity) {
  const int32_t* z = zbuf + tile * kTile;
  if (z[lane] < 0) return -1;
  int64_t slot = tile_offset[tile];
  for (int u = 0; u < lane; ++u) slot += z[u] >= 0 ? 1 : 0;
  return slot < capacity ? slot : -1;
}

template <typename T>
SPEAR_HD inline void write_lane(const T* L, const T* thresh, const SamplerParams& p,
                                uint64_t first, int64_t tile, int lane, int64_t slot, T* A,
                                int* rows, T* q, T* out_q, int32_t* out_zeros,
                                int64_t* out_index) {
  const uint64_t s = first + static_cast<uint64_t>(tile * kTile + lane);
  const int z = evaluate_sample(L, thresh, p, s, A, rows, q);
  for (int j = 0; j < p.b; ++j) out_q[slot * p.b + j] = q[j];
  out_zeros[slot] = z;
  out_index[slot] = static_cast<int64_t>(s);
}

}  // namespace spear::compaction
