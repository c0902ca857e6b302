#include "sampler_cpu.h"

#include <algorithm>
#include <numeric>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace spear::cpu {

int max_threads() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

const char* simd_name() { return "scalar"; }

namespace {

template <typename T>
struct Accepted {
  std::vector<T> q;
  std::vector<int32_t> zeros;
  std::vector<int64_t> index;
  int64_t total = 0;
};

}  // namespace

template <typename T>
SampleResult<T> sample(const T* L, const T* thresh, const SamplerParams& params, uint64_t offset,
                       int64_t num_samples, int64_t max_candidates, int num_threads) {
  const int b = params.b;
  const int threads = num_threads > 0 ? num_threads : max_threads();
  // Chunks are handed out dynamically (early exit makes samples uneven) but each thread's
  // chunks arrive in increasing order, so keeping a thread's first max_candidates keeps
  // every candidate among the global lowest max_candidates: the result is thread-count free.
  constexpr int64_t kChunk = 4096;
  const int64_t num_chunks = (num_samples + kChunk - 1) / kChunk;
  std::vector<Accepted<T>> per_thread(static_cast<size_t>(threads));

#pragma omp parallel num_threads(threads)
  {
#ifdef _OPENMP
    Accepted<T>& mine = per_thread[static_cast<size_t>(omp_get_thread_num())];
#else
    Accepted<T>& mine = per_thread[0];
#endif
    std::vector<T> A(static_cast<size_t>(b) * b), q(static_cast<size_t>(b));
    std::vector<int> rows(static_cast<size_t>(b));
#pragma omp for schedule(dynamic, 1)
    for (int64_t c = 0; c < num_chunks; ++c) {
      const int64_t begin = c * kChunk;
      const int64_t end = std::min(num_samples, begin + kChunk);
      for (int64_t i = begin; i < end; ++i) {
        const uint64_t s = offset + static_cast<uint64_t>(i);
        const int z = evaluate_sample(L, thresh, params, s, A.data(), rows.data(), q.data());
        if (z < 0) continue;
        ++mine.total;
        if (static_cast<int64_t>(mine.index.size()) >= max_candidates) continue;
        mine.q.insert(mine.q.end(), q.begin(), q.end());
        mine.zeros.push_back(z);
        mine.index.push_back(static_cast<int64_t>(s));
      }
    }
  }

  // Merge, sort by sample index, keep the lowest max_candidates.
  SampleResult<T> out;
  out.evaluated = num_samples;
  std::vector<std::pair<int64_t, std::pair<int, int64_t>>> order;  // (index, (thread, position))
  for (int t = 0; t < threads; ++t) {
    out.accepted_total += per_thread[t].total;
    for (int64_t i = 0; i < static_cast<int64_t>(per_thread[t].index.size()); ++i)
      order.push_back({per_thread[t].index[i], {t, i}});
  }
  std::sort(order.begin(), order.end());
  if (static_cast<int64_t>(order.size()) > max_candidates) order.resize(max_candidates);
  out.q.reserve(order.size() * b);
  for (const auto& o : order) {
    const Accepted<T>& src = per_thread[o.second.first];
    const int64_t i = o.second.second;
    out.q.insert(out.q.end(), src.q.begin() + i * b, src.q.begin() + (i + 1) * b);
    out.zeros.push_back(src.zeros[i]);
    out.index.push_back(src.index[i]);
  }
  return out;
}

template SampleResult<float> sample<float>(const float*, const float*, const SamplerParams&,
                                           uint64_t, int64_t, int64_t, int);
template SampleResult<double> sample<double>(const double*, const double*, const SamplerParams&,
                                             uint64_t, int64_t, int64_t, int);

}  // namespace spear::cpu
