#include "sampler_cpu.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <immintrin.h>
#include <limits>
#include <numeric>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace spear::cpu {

// The lock-step paths (lockstep.inc), for the baseline ISA and for AVX-512. All headers
// are included above: only the functions of lockstep.inc get the AVX-512 target.
namespace generic_f64 {
using T = double;
constexpr int W = 8;
#include "lockstep.inc"
}  // namespace generic_f64
namespace generic_f32 {
using T = float;
constexpr int W = 16;
#include "lockstep.inc"
}  // namespace generic_f32
#pragma GCC push_options
#pragma GCC target("avx512f,avx512dq,avx512vl,avx512bw,avx512cd")
#define SPEAR_LOCKSTEP_AVX512 1  // lockstep.inc's AVX-512 intrinsics (vpconflictd in the draw)
namespace avx512_f64 {
using T = double;
constexpr int W = 8;
#include "lockstep.inc"
}  // namespace avx512_f64
namespace avx512_f32 {
using T = float;
constexpr int W = 16;
#include "lockstep.inc"
}  // namespace avx512_f32
#undef SPEAR_LOCKSTEP_AVX512
#pragma GCC pop_options

int max_threads() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

namespace {

// Largest m for the bitmap duplicate test of the row draw (128 KiB per thread at most).
constexpr int kBitmapMaxRows = 1 << 20;

bool cpu_has_avx512() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512cd");
}

// Without AVX-512 the scalar path: the portable-vector build of the lock-step code is
// bit-identical but 3x slower than scalar at b = 20 (1.5e5 vs 4.9e5 samples/s, one core
// of this machine: GCC splits the 64-byte vectors into SSE2 halves and the selects cost
// more than the scalar branches). It stays for tests (set_simd("generic")).
Simd detect() { return cpu_has_avx512() ? Simd::kAvx512 : Simd::kScalar; }

std::atomic<int> g_forced{-1};  // set_simd(): -1 = detect

Simd active() {
  const int f = g_forced.load(std::memory_order_relaxed);
  static const Simd detected = detect();
  return f < 0 ? detected : static_cast<Simd>(f);
}

template <typename T>
using GroupFn = void (*)(const T*, const T*, const SamplerParams&, uint64_t, int, T*, T*, int*,
                         T*, int*, T*, uint64_t*, int32_t*);

template <typename NS_T>
struct Group;

template <typename T>
struct Path {
  GroupFn<T> fn = nullptr;  // nullptr: scalar, one sample at a time
  int lanes = 1;
};

template <typename T>
Path<T> path_for(Simd s, int b);

template <>
Path<double> path_for<double>(Simd s, int b) {
  if (b > kLockstepMaxB || s == Simd::kScalar) return {};
  if (s == Simd::kAvx512)
    return {[](const double* L, const double* t, const SamplerParams& p, uint64_t f, int n,
               double* A, double* q, int* r, double* ql, int* z, double* qo,
               uint64_t* seen, int32_t* cand) {
              avx512_f64::evaluate_group(L, t, p, f, n, A, reinterpret_cast<avx512_f64::VA*>(q),
                                         r, ql, z, qo, seen, cand);
            },
            avx512_f64::W};
  return {[](const double* L, const double* t, const SamplerParams& p, uint64_t f, int n,
             double* A, double* q, int* r, double* ql, int* z, double* qo,
               uint64_t* seen, int32_t* cand) {
            generic_f64::evaluate_group(L, t, p, f, n, A, reinterpret_cast<generic_f64::VA*>(q),
                                        r, ql, z, qo, seen, cand);
          },
          generic_f64::W};
}

template <>
Path<float> path_for<float>(Simd s, int b) {
  if (b > kLockstepMaxB || s == Simd::kScalar) return {};
  if (s == Simd::kAvx512)
    return {[](const float* L, const float* t, const SamplerParams& p, uint64_t f, int n, float* A,
               float* q, int* r, float* ql, int* z, float* qo, uint64_t* seen, int32_t* cand) {
              avx512_f32::evaluate_group(L, t, p, f, n, A, reinterpret_cast<avx512_f32::VA*>(q),
                                         r, ql, z, qo, seen, cand);
            },
            avx512_f32::W};
  return {[](const float* L, const float* t, const SamplerParams& p, uint64_t f, int n, float* A,
             float* q, int* r, float* ql, int* z, float* qo, uint64_t* seen, int32_t* cand) {
            generic_f32::evaluate_group(L, t, p, f, n, A, reinterpret_cast<generic_f32::VA*>(q), r,
                                        ql, z, qo, seen, cand);
          },
          generic_f32::W};
}

template <typename T>
struct Accepted {
  std::vector<T> q;
  std::vector<int32_t> zeros;
  std::vector<int64_t> index;
  int64_t total = 0;
};

// A 64-byte aligned scratch buffer of n values.
template <typename T>
struct Aligned {
  std::vector<T> buf;
  T* ptr;
  explicit Aligned(size_t n) : buf(n + 64 / sizeof(T)) {
    auto a = reinterpret_cast<uintptr_t>(buf.data());
    ptr = reinterpret_cast<T*>((a + 63) & ~uintptr_t(63));
  }
};

}  // namespace

const char* simd_name(Simd s) {
  switch (s) {
    case Simd::kAvx512: return "avx512";
    case Simd::kGeneric: return "generic";
    default: return "scalar";
  }
}

const char* simd_name() { return simd_name(active()); }

std::string set_simd(const std::string& name) {
  const std::string previous = simd_name();
  if (name == "auto") g_forced = -1;
  else if (name == "scalar") g_forced = static_cast<int>(Simd::kScalar);
  else if (name == "generic") g_forced = static_cast<int>(Simd::kGeneric);
  else if (name == "avx512") {
    if (!cpu_has_avx512()) throw std::invalid_argument("this CPU has no AVX-512");
    g_forced = static_cast<int>(Simd::kAvx512);
  } else {
    throw std::invalid_argument("simd must be 'auto', 'scalar', 'generic' or 'avx512', got '" +
                                name + "'");
  }
  return previous;
}

template <typename T>
SampleResult<T> sample(const T* L, const T* thresh, const SamplerParams& params, uint64_t offset,
                       int64_t num_samples, int64_t max_candidates, int num_threads) {
  const int b = params.b, k = b - 1;
  const int threads = num_threads > 0 ? num_threads : max_threads();
  const Path<T> path = path_for<T>(active(), b);
  const int W = path.lanes;
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
    // qv: the candidate q (b vectors) and the elimination's scratch (lockstep.inc).
    Aligned<T> A(static_cast<size_t>(b) * b * W),
        qv(static_cast<size_t>(b + generic_f64::null_scratch(b)) * W);
    std::vector<T> ql(static_cast<size_t>(b)), q_out(static_cast<size_t>(b) * W);
    std::vector<int> rows(static_cast<size_t>(b) * W), z(static_cast<size_t>(W));
    // Bitmap of drawn rows for the duplicate test (m bits; above kBitmapMaxRows the scan).
    std::vector<uint64_t> seen(params.m <= kBitmapMaxRows ? (params.m + 63) / 64 : 0);
    // Candidate rows of the row draws, made for W samples at once (4 per Philox block).
    std::vector<int32_t> cand(static_cast<size_t>(W) * generic_f64::cand_words(k));
    auto keep = [&](int zl, const T* q, uint64_t s) {
      ++mine.total;
      if (static_cast<int64_t>(mine.index.size()) >= max_candidates) return;
      mine.q.insert(mine.q.end(), q, q + b);
      mine.zeros.push_back(zl);
      mine.index.push_back(static_cast<int64_t>(s));
    };
#pragma omp for schedule(dynamic, 1)
    for (int64_t c = 0; c < num_chunks; ++c) {
      const int64_t begin = c * kChunk;
      const int64_t end = std::min(num_samples, begin + kChunk);
      if (path.fn == nullptr) {
        for (int64_t i = begin; i < end; ++i) {
          const uint64_t s = offset + static_cast<uint64_t>(i);
          const int zl = evaluate_sample(L, thresh, params, s, A.ptr, rows.data(), ql.data());
          if (zl >= 0) keep(zl, ql.data(), s);
        }
        continue;
      }
      for (int64_t i = begin; i < end; i += W) {
        const int lanes = static_cast<int>(std::min<int64_t>(W, end - i));
        const uint64_t first = offset + static_cast<uint64_t>(i);
        path.fn(L, thresh, params, first, lanes, A.ptr, qv.ptr, rows.data(), ql.data(), z.data(),
                q_out.data(), seen.empty() ? nullptr : seen.data(), cand.data());
        for (int l = 0; l < lanes; ++l)
          if (z[l] >= 0) keep(z[l], q_out.data() + static_cast<size_t>(l) * b, first + l);
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
