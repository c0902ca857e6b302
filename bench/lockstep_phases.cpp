// The AVX-512 lock-step phases of the CPU kernel (csrc/cpu/lockstep.inc) as separate
// non-inlined functions, for `perf record` (which phase holds the time) and A/B timing of a
// change (build two binaries with -DINC pointing at two versions). b = 20, m = 200, float64,
// the planted L of bench/common.py:
//
//   python -c "import sys; sys.path.insert(0, 'bench'); from common import planted_L; \
//     from spear.attack.kernel import row_thresholds as t; L = planted_L(200, 20, seed=20); \
//     open('/tmp/L20.bin', 'wb').write(L.tobytes() + t(L, 1e-9).tobytes())"
//   g++ -O3 -g -std=c++17 -ffp-contract=off -Icsrc/include -Icsrc/cpu \
//     -DINC='"lockstep.inc"' bench/lockstep_phases.cpp -o /tmp/phases
//   /tmp/phases 400000 && perf record -e cpu-clock /tmp/phases 400000 && perf report
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <algorithm>
#include <cstring>
#include <immintrin.h>
#include <limits>
#include <type_traits>
#include <vector>

#include "spear/sampler.h"

#ifndef INC
#define INC "lockstep.inc"
#endif

#pragma GCC target("avx512f,avx512dq,avx512vl,avx512bw,avx512cd")
#define SPEAR_LOCKSTEP_AVX512 1
namespace spear {
constexpr int kLockstepMaxB = 64;
namespace g {
using T = double;
constexpr int W = 8;
#include INC
__attribute__((noinline)) void ph_draw(const SamplerParams& p, uint64_t first, int* rows) {
  static uint64_t seen[64] = {};
  static int32_t cand[W * 4 * 8];
  draw_rows_lockstep(p, first, W, p.b - 1, rows, cand, seen);
}
__attribute__((noinline)) void ph_gather(const T* L, int b, int* rows, T* A) {
  gather_rows(L, b, b - 1, W, rows, A);
}
__attribute__((noinline)) I ph_null(T* A, int b, VA* q) {
  return null_vectors(A, b - 1, b, q, q + b);
}
__attribute__((noinline)) I ph_probe(const T* L, const T* t, int b, VA* q) {
  return probe_counts(L, t, 64, b, q);
}
}  // namespace g
}  // namespace spear

int main(int argc, char** argv) {
  using namespace spear;
  const int m = 200, b = 20;
  std::vector<double> L(m * b), t(m);
  FILE* f = std::fopen("/tmp/L20.bin", "rb");
  if (!f || std::fread(L.data(), 8, m * b, f) != size_t(m * b) ||
      std::fread(t.data(), 8, m, f) != size_t(m)) {
    std::fprintf(stderr, "write /tmp/L20.bin first (see the comment at the top)\n");
    return 1;
  }
  std::fclose(f);
  SamplerParams p;
  p.m = m;
  p.b = b;
  p.min_zeros = 22;
  p.probe = 64;
  p.probe_min = 1;
  alignas(64) static double A[19 * 20 * 8], qv[200 * 8];
  int rows[8 * 19 + 1];  // one slot past the last lane (draw_rows_lockstep)
  const long n = argc > 1 ? std::atol(argv[1]) : 400000;
  long acc = 0;
  const auto t0 = std::chrono::steady_clock::now();
  for (long i = 0; i < n; i += 8) {
    g::ph_draw(p, static_cast<uint64_t>(i), rows);
    g::ph_gather(L.data(), b, rows, A);
    const g::I failed = g::ph_null(A, b, reinterpret_cast<g::VA*>(qv));
    const g::I z = g::ph_probe(L.data(), t.data(), b, reinterpret_cast<g::VA*>(qv));
    acc += z[0] + failed[1];  // keeps the work observable
  }
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("%ld samples %.3g/s (check %ld)\n", n, n / s, acc);
  return 0;
}
