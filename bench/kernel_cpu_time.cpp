// CPU time (and, with bench/icount.c, the instruction count) of the CPU kernel on one
// thread: spear::cpu::sample() linked from a source tree, so that two trees (two versions of
// csrc/) can be compared A/B in alternating runs. Prints the best of 2 runs in ns per sample
// (CLOCK_THREAD_CPUTIME_ID: other load on the machine inflates wall time far more than CPU
// time) and a digest of the accepted candidates (bit-identity between versions).
//
//   python -c "import sys, numpy as np; sys.path.insert(0, 'bench'); from common import planted_L; \
//     from spear.attack.kernel import row_thresholds, default_min_zeros, DEFAULT_TOL; \
//     b, m, dt = 20, 200, np.dtype('float64'); L = planted_L(m, b, seed=b, dtype=dt); \
//     tol = DEFAULT_TOL[dt]; m = L.shape[0]; \
//     open('/tmp/L_20_200_f64.bin', 'wb').write(np.array([m, b, dt.itemsize, \
//       default_min_zeros(m, b, tol)], np.int32).tobytes() + L.tobytes() \
//       + row_thresholds(L, tol).astype(dt).tobytes())"
//   g++ -O3 -std=c++17 -ffp-contract=off -fopenmp -ISRC/csrc/include -ISRC/csrc -ISRC/csrc/cpu \
//     bench/kernel_cpu_time.cpp SRC/csrc/cpu/sampler_cpu.cpp -o /tmp/kt_SRC
//   /tmp/kt_A /tmp/L_20_200_f64.bin 300000; /tmp/kt_B /tmp/L_20_200_f64.bin 300000  (repeat, alternate)
//
// Instruction counts (the VM has no hardware counters and valgrind has no AVX-512): build
// with -DICOUNT -no-pie -g (int3 around one run) and run under bench/icount.c, which
// single-steps the code between the two int3 (about 40,000 instructions a second: use
// 200 samples).
#include <time.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "sampler_cpu.h"

static double thread_cpu_seconds() {
  timespec t;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return t.tv_sec + 1e-9 * t.tv_nsec;
}

template <typename T>
static int run(FILE* f, int m, int b, int min_zeros, long n, int repeats) {
  std::vector<T> L(static_cast<size_t>(m) * b), thresh(m);
  if (std::fread(L.data(), sizeof(T), L.size(), f) != L.size() ||
      std::fread(thresh.data(), sizeof(T), m, f) != static_cast<size_t>(m))
    return 1;
  spear::SamplerParams p;
  p.m = m;
  p.b = b;
  p.min_zeros = min_zeros;
  p.probe = b >= 8 ? 64 : 0;  // kernel.py's default_probe
  p.probe_min = 1;
  double best = 1e30;
  unsigned long digest = 0;
  long accepted = 0;
  for (int r = 0; r < repeats; ++r) {
#ifdef ICOUNT
    asm volatile("int3");
#endif
    const double t0 = thread_cpu_seconds();
    const auto res = spear::cpu::sample<T>(L.data(), thresh.data(), p, 0, n, 100000, 1);
    const double dt = thread_cpu_seconds() - t0;
#ifdef ICOUNT
    asm volatile("int3");
#endif
    best = dt < best ? dt : best;
    accepted = res.accepted_total;
    digest = 0;
    for (T x : res.q) {
      unsigned long u = 0;
      std::memcpy(&u, &x, sizeof x);
      digest = digest * 1000003 ^ u;
    }
    for (auto z : res.zeros) digest = digest * 31 + z;
  }
  std::printf("%.1f ns/sample  accepted %ld  digest %016lx\n", 1e9 * best / n, accepted, digest);
  return 0;
}

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s CONFIG.bin [samples [repeats]]\n", argv[0]);
    return 2;
  }
  FILE* f = std::fopen(argv[1], "rb");
  int h[4];  // m, b, bytes per value, min_zeros
  if (!f || std::fread(h, sizeof(int), 4, f) != 4) return 1;
  const long n = argc > 2 ? std::atol(argv[2]) : 300000;
  const int repeats = argc > 3 ? std::atoi(argv[3]) : 2;
  return h[2] == 8 ? run<double>(f, h[0], h[1], h[3], n, repeats)
                   : run<float>(f, h[0], h[1], h[3], n, repeats);
}
