#include "cuda_emulation.h"

#include <algorithm>
#include <numeric>
#include <vector>

#include "spear/compaction.h"

namespace spear::emulation {

namespace {

// Fisher-Yates with a splitmix64 stream: a reproducible shuffled order of 0..n-1.
std::vector<int> shuffled(int n, uint64_t seed) {
  std::vector<int> v(static_cast<size_t>(n));
  std::iota(v.begin(), v.end(), 0);
  if (seed == 0) return v;
  uint64_t x = seed;
  for (int i = n - 1; i > 0; --i) {
    x += 0x9E3779B97F4A7C15ull;
    uint64_t z = x;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    std::swap(v[static_cast<size_t>(i)], v[static_cast<size_t>(z % static_cast<uint64_t>(i + 1))]);
  }
  return v;
}

}  // namespace

template <typename T>
SampleResult<T> sample_as_cuda(const T* L, const T* thresh, const SamplerParams& params,
                               uint64_t offset, int64_t num_samples, int64_t capacity, int grid,
                               int64_t chunk_tiles, uint64_t order_seed) {
  using compaction::kScanThreads;
  using compaction::kTile;
  const int b = params.b;
  SampleResult<T> out;
  out.evaluated = num_samples;
  out.q.assign(static_cast<size_t>(capacity) * b, T(0));
  out.zeros.assign(static_cast<size_t>(capacity), 0);
  out.index.assign(static_cast<size_t>(capacity), 0);
  std::vector<T> A(static_cast<size_t>(b) * b), q(static_cast<size_t>(b));
  std::vector<int> rows(static_cast<size_t>(b));
  const std::vector<int> blocks = shuffled(grid, order_seed);
  const std::vector<int> lanes = shuffled(kTile, order_seed ? order_seed + 1 : 0);
  uint64_t count = 0;  // the device counter
  std::vector<int32_t> zbuf(static_cast<size_t>(chunk_tiles) * kTile), tile_count(chunk_tiles);
  std::vector<int64_t> tile_offset(chunk_tiles), run(kScanThreads);
  for (int64_t begin = 0; begin < num_samples; begin += chunk_tiles * kTile) {
    const int64_t size = std::min(num_samples - begin, chunk_tiles * kTile);
    const int64_t tiles = (size + kTile - 1) / kTile;
    const uint64_t first = offset + static_cast<uint64_t>(begin);
    // Pass 1: blocks in shuffled order, each over its tiles; threads in shuffled order.
    for (int blk : blocks)
      for (int64_t tile = blk; tile < tiles; tile += grid) {
        int n = 0;
        for (int lane : lanes)
          n += compaction::evaluate_lane(L, thresh, params, first, size, tile, lane, zbuf.data(),
                                         A.data(), rows.data(), q.data()) >= 0;
        tile_count[tile] = n;  // __syncthreads_count
      }
    // Pass 2: the scan block's three phases.
    for (int t = 0; t < kScanThreads; ++t)
      run[t] = compaction::scan_run_sum(tile_count.data(), tiles, t);
    count = compaction::scan_runs(run.data(), count);
    for (int t : shuffled(kScanThreads, order_seed))
      compaction::scan_write(tile_count.data(), tiles, t, run[t], tile_offset.data());
    // Pass 3.
    for (int blk : blocks)
      for (int64_t tile = blk; tile < tiles; tile += grid) {
        if (tile_offset[tile] >= capacity) continue;
        for (int lane : lanes) {
          const int64_t slot =
              compaction::output_slot(zbuf.data(), tile_offset.data(), tile, lane, capacity);
          if (slot >= 0)
            compaction::write_lane(L, thresh, params, first, tile, lane, slot, A.data(),
                                   rows.data(), q.data(), out.q.data(), out.zeros.data(),
                                   out.index.data());
        }
      }
  }
  out.accepted_total = static_cast<int64_t>(count);
  const auto kept = static_cast<size_t>(std::min<int64_t>(static_cast<int64_t>(count), capacity));
  out.q.resize(kept * b);
  out.zeros.resize(kept);
  out.index.resize(kept);
  return out;
}

template SampleResult<float> sample_as_cuda<float>(const float*, const float*,
                                                   const SamplerParams&, uint64_t, int64_t,
                                                   int64_t, int, int64_t, uint64_t);
template SampleResult<double> sample_as_cuda<double>(const double*, const double*,
                                                     const SamplerParams&, uint64_t, int64_t,
                                                     int64_t, int, int64_t, uint64_t);

}  // namespace spear::emulation
