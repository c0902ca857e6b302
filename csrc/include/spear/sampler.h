// The per-sample math of the SPEAR direction sampler, written once for host and device.
//
// One sample: draw k = b-1 distinct rows of L (m x b, row-major) with the counter-based
// generator, find the unit null vector q of that k x b submatrix by Gaussian elimination
// with partial pivoting, then count the rows of L with |L_r q| <= thresh[r]
// (thresh = tol * ||L_r||, precomputed by the caller). A sample is accepted when
//   (1) at least `probe_min` of the first `probe` rows are zero beyond the sampled rows
//       among them (a cheap early test: a wrong proposal has no zeros but its own rows), and
//   (2) the total number of zero rows is at least `min_zeros` (checked with an early exit
//       as soon as too many non-zero rows have been seen).
// The CPU and CUDA kernels call evaluate_sample() and differ only in scheduling.
// python/spear/attack/reference.py is the plain numpy oracle of this file.
#pragma once

#include <cmath>
#include <cstdint>

#include "spear/hostdevice.h"
#include "spear/philox.h"

namespace spear {

struct SamplerParams {
  int m = 0;            // rows of L
  int b = 0;            // columns of L (batch size)
  int min_zeros = 0;    // accept only with at least this many zero rows (sampled rows included)
  int probe = 0;        // rows [0, probe) form the early test; 0 disables it
  int probe_min = 0;    // zeros required in the probe beyond the sampled rows that fall there
  uint64_t seed = 0;
};

// Every floating-point operation of the per-sample math goes through these helpers, so
// host and device round identically:
// - s + a*b rounds the product before the sum on every backend. nvcc would fuse it into
//   one FMA (one rounding) and the CPU would not; the host build uses -ffp-contract=off.
// - float on the device: `--use_fast_math` or `-ftz=true` given by a user would turn even
//   the __fmul_rn-style intrinsics into flush-to-zero and approximate instructions (PTX
//   checked with nvcc 13.0: mul.rn.ftz.f32, rcp.approx.ftz.f32, setp.gt.ftz.f32) and nvcc
//   defines no macro to detect it, so float arithmetic and comparisons are written as
//   inline PTX without .ftz. double is not affected by either flag (only -fmad, which the
//   __dmul_rn/__dadd_rn intrinsics already rule out).
#if defined(__CUDA_ARCH__)
__device__ inline float ptx_mul(float a, float b) {
  float r;
  asm("mul.rn.f32 %0, %1, %2;" : "=f"(r) : "f"(a), "f"(b));
  return r;
}
__device__ inline float ptx_add(float a, float b) {
  float r;
  asm("add.rn.f32 %0, %1, %2;" : "=f"(r) : "f"(a), "f"(b));
  return r;
}
__device__ inline float ptx_div(float a, float b) {
  float r;
  asm("div.rn.f32 %0, %1, %2;" : "=f"(r) : "f"(a), "f"(b));
  return r;
}
__device__ inline float ptx_sqrt(float a) {
  float r;
  asm("sqrt.rn.f32 %0, %1;" : "=f"(r) : "f"(a));
  return r;
}
__device__ inline float ptx_neg(float a) {
  float r;
  asm("neg.f32 %0, %1;" : "=f"(r) : "f"(a));
  return r;
}
__device__ inline float ptx_abs(float a) {
  float r;
  asm("abs.f32 %0, %1;" : "=f"(r) : "f"(a));
  return r;
}
__device__ inline bool ptx_gt(float a, float b) {
  unsigned r;
  asm("{ .reg .pred p; setp.gt.f32 p, %1, %2; selp.u32 %0, 1, 0, p; }" : "=r"(r) : "f"(a), "f"(b));
  return r != 0;
}
__device__ inline bool ptx_le(float a, float b) {
  unsigned r;
  asm("{ .reg .pred p; setp.le.f32 p, %1, %2; selp.u32 %0, 1, 0, p; }" : "=r"(r) : "f"(a), "f"(b));
  return r != 0;
}
#endif

SPEAR_HD inline double fmul(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dmul_rn(a, b);
#else
  return a * b;
#endif
}
SPEAR_HD inline float fmul(float a, float b) {
#if defined(__CUDA_ARCH__)
  return ptx_mul(a, b);
#else
  return a * b;
#endif
}
SPEAR_HD inline double fadd(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dadd_rn(a, b);
#else
  return a + b;
#endif
}
SPEAR_HD inline float fadd(float a, float b) {
#if defined(__CUDA_ARCH__)
  return ptx_add(a, b);
#else
  return a + b;
#endif
}
SPEAR_HD inline double fdiv(double a, double b) { return a / b; }  // always IEEE for double
SPEAR_HD inline float fdiv(float a, float b) {
#if defined(__CUDA_ARCH__)
  return ptx_div(a, b);
#else
  return a / b;
#endif
}
SPEAR_HD inline double fsqrt(double a) { return std::sqrt(a); }
SPEAR_HD inline float fsqrt(float a) {
#if defined(__CUDA_ARCH__)
  return ptx_sqrt(a);
#else
  return std::sqrt(a);
#endif
}
SPEAR_HD inline double fneg(double a) { return -a; }
SPEAR_HD inline float fneg(float a) {
#if defined(__CUDA_ARCH__)
  return ptx_neg(a);
#else
  return -a;
#endif
}
// |x|: branchless (a sign-bit mask), unlike x < 0 ? -x : x.
SPEAR_HD inline double abs_value(double x) { return std::fabs(x); }
SPEAR_HD inline float abs_value(float x) {
#if defined(__CUDA_ARCH__)
  return ptx_abs(x);
#else
  return std::fabs(x);
#endif
}
SPEAR_HD inline bool greater(double a, double b) { return a > b; }
SPEAR_HD inline bool greater(float a, float b) {
#if defined(__CUDA_ARCH__)
  return ptx_gt(a, b);
#else
  return a > b;
#endif
}
SPEAR_HD inline bool less_equal(double a, double b) { return a <= b; }
SPEAR_HD inline bool less_equal(float a, float b) {
#if defined(__CUDA_ARCH__)
  return ptx_le(a, b);
#else
  return a <= b;
#endif
}
template <typename T>
SPEAR_HD inline T mul_add(T s, T a, T b) {
  return fadd(s, fmul(a, b));
}

// k distinct row indices in [0, m), in draw order. Requires k <= m.
SPEAR_HD inline void draw_rows(SampleStream& rng, int m, int k, int* rows) {
  for (int j = 0; j < k; ++j) {
    int r;
    bool duplicate;
    do {
      r = static_cast<int>(rng.below(static_cast<uint32_t>(m)));
      duplicate = false;
      for (int i = 0; i < j; ++i) duplicate |= (rows[i] == r);
    } while (duplicate);
    rows[j] = r;
  }
}

// Unit null vector of the k x b matrix A (row-major, k = b-1; A is overwritten).
// Row-echelon form by partial pivoting, then back substitution with q[b-1] = 1, so the
// returned vector has q[b-1] > 0. Returns false when a pivot vanishes (the leading
// k x k block is singular; then the null vector has q[b-1] = 0 and we simply reject).
template <typename T>
SPEAR_HD inline bool null_vector(T* A, int k, int b, T* q) {
  for (int c = 0; c < k; ++c) {
    int p = c;
    T best = abs_value(A[c * b + c]);
    for (int r = c + 1; r < k; ++r) {
      const T v = abs_value(A[r * b + c]);
      if (greater(v, best)) {
        best = v;
        p = r;
      }
    }
    if (!greater(best, T(0))) return false;
    if (p != c) {
      for (int j = c; j < b; ++j) {
        const T t = A[p * b + j];
        A[p * b + j] = A[c * b + j];
        A[c * b + j] = t;
      }
    }
    const T inv = fdiv(T(1), A[c * b + c]);
    for (int r = c + 1; r < k; ++r) {
      const T f = fmul(A[r * b + c], inv);
      for (int j = c + 1; j < b; ++j) A[r * b + j] = mul_add(A[r * b + j], fneg(f), A[c * b + j]);
    }
    A[c * b + c] = inv;  // back substitution multiplies: no division on its serial chain
  }
  q[b - 1] = T(1);
  for (int c = k - 1; c >= 0; --c) {
    T s = A[c * b + (b - 1)];
    for (int j = c + 1; j < k; ++j) s = mul_add(s, A[c * b + j], q[j]);
    q[c] = fmul(fneg(s), A[c * b + c]);
  }
  T norm2 = T(0);
  for (int j = 0; j < b; ++j) norm2 = mul_add(norm2, q[j], q[j]);
  const T norm = fsqrt(norm2);
  if (!greater(norm, T(0)) || !greater(T(INFINITY), norm)) return false;
  const T inv_norm = fdiv(T(1), norm);
  for (int j = 0; j < b; ++j) q[j] = fmul(q[j], inv_norm);
  return true;
}

template <typename T>
SPEAR_HD inline bool is_zero_row(const T* L, const T* thresh, int r, int b, const T* q) {
  const T* row = L + static_cast<int64_t>(r) * b;
  T s = T(0);
  for (int j = 0; j < b; ++j) s = mul_add(s, row[j], q[j]);
  return less_equal(abs_value(s), thresh[r]);
}

// Zero flags of rows r..r+3 (r+3 < m). Four independent dot products keep the FMA units
// busy where one row's chain would wait on latency; each row keeps its own summation
// order, so the flags are exactly those of is_zero_row.
template <typename T>
SPEAR_HD inline int zero_flags4(const T* L, const T* thresh, int r, int b, const T* q) {
  const T* r0 = L + static_cast<int64_t>(r) * b;
  const T* r1 = r0 + b;
  const T* r2 = r1 + b;
  const T* r3 = r2 + b;
  T s0 = T(0), s1 = T(0), s2 = T(0), s3 = T(0);
  for (int j = 0; j < b; ++j) {
    const T qj = q[j];
    s0 = mul_add(s0, r0[j], qj);
    s1 = mul_add(s1, r1[j], qj);
    s2 = mul_add(s2, r2[j], qj);
    s3 = mul_add(s3, r3[j], qj);
  }
  return (less_equal(abs_value(s0), thresh[r]) ? 1 : 0) |
         (less_equal(abs_value(s1), thresh[r + 1]) ? 2 : 0) |
         (less_equal(abs_value(s2), thresh[r + 2]) ? 4 : 0) |
         (less_equal(abs_value(s3), thresh[r + 3]) ? 8 : 0);
}

SPEAR_HD inline int popcount4(int f) { return (f & 1) + ((f >> 1) & 1) + ((f >> 2) & 1) + ((f >> 3) & 1); }

// Zero rows among [begin, end), four at a time.
template <typename T>
SPEAR_HD inline int count_range(const T* L, const T* thresh, int begin, int end, int b,
                                const T* q) {
  int zeros = 0, r = begin;
  for (; r + 4 <= end; r += 4) zeros += popcount4(zero_flags4(L, thresh, r, b, q));
  for (; r < end; ++r) zeros += is_zero_row(L, thresh, r, b, q) ? 1 : 0;
  return zeros;
}

// First row after the early test's rows (0 when the test is off). Clamped on both sides:
// the entry points reject a negative probe, this keeps a bad value from indexing L.
SPEAR_HD inline int probe_end_of(const SamplerParams& p) {
  return p.probe <= 0 ? 0 : (p.probe < p.m ? p.probe : p.m);
}

// Sampled rows among [0, probe_end): they are zero by construction and do not count as
// evidence in the early test.
SPEAR_HD inline int sampled_in_probe(const int* rows, int k, int probe_end) {
  int n = 0;
  for (int i = 0; i < k; ++i) n += rows[i] < probe_end ? 1 : 0;
  return n;
}

// Verdict of the early test from the probe rows' zero count: false rejects.
SPEAR_HD inline bool probe_passes(const SamplerParams& p, int probe_end, int zeros, int sampled) {
  if (probe_end > 0 && zeros - sampled < p.probe_min) return false;
  return probe_end - zeros <= p.m - p.min_zeros;
}

// The rows after the probe, given the probe's zero count (the probe passed): the total
// zero count, or -1 once too many non-zero rows have been seen. The early exit is checked
// every four rows; verdict and count are the same as a row-by-row scan's.
template <typename T>
SPEAR_HD inline int count_after_probe(const T* L, const T* thresh, const SamplerParams& p,
                                      const T* q, int probe_end, int zeros) {
  const int max_nonzeros = p.m - p.min_zeros;
  int r = probe_end;
  for (; r + 4 <= p.m; r += 4) {
    zeros += popcount4(zero_flags4(L, thresh, r, p.b, q));
    if (r + 4 - zeros > max_nonzeros) return -1;
  }
  for (; r < p.m; ++r) zeros += is_zero_row(L, thresh, r, p.b, q) ? 1 : 0;
  return (p.m - zeros > max_nonzeros) ? -1 : zeros;
}

// Number of zero rows of L q, or -1 when the sample is rejected (possibly early).
template <typename T>
SPEAR_HD inline int count_zeros(const T* L, const T* thresh, const SamplerParams& p, const T* q,
                                const int* rows) {
  const int probe_end = probe_end_of(p);
  const int zeros = count_range(L, thresh, 0, probe_end, p.b, q);
  if (!probe_passes(p, probe_end, zeros, sampled_in_probe(rows, p.b - 1, probe_end))) return -1;
  return count_after_probe(L, thresh, p, q, probe_end, zeros);
}

// Evaluate sample number `sample`. Scratch: A holds (b-1)*b values, rows b-1 ints, q b values.
// Returns the zero count (q then holds the unit candidate) or -1 when rejected.
template <typename T>
SPEAR_HD inline int evaluate_sample(const T* L, const T* thresh, const SamplerParams& p,
                                    uint64_t sample, T* A, int* rows, T* q) {
  const int k = p.b - 1;
  SampleStream rng(p.seed, sample);
  draw_rows(rng, p.m, k, rows);
  for (int i = 0; i < k; ++i) {
    const T* src = L + static_cast<int64_t>(rows[i]) * p.b;
    for (int j = 0; j < p.b; ++j) A[i * p.b + j] = src[j];
  }
  if (!null_vector(A, k, p.b, q)) return -1;
  return count_zeros(L, thresh, p, q, rows);
}

}  // namespace spear
