// Philox4x32-10 counter-based generator (Salmon et al., SC'11, "Random123").
//
// Counter-based so that sample `s` of seed `k` draws the same numbers on any thread,
// on the CPU and on the GPU: no generator state is carried between samples. The
// numpy reference in python/spear/attack/reference.py implements the same function.
#pragma once

#include <cstdint>

#include "spear/hostdevice.h"

namespace spear {

struct Philox4x32 {
  uint32_t v[4];
};

SPEAR_HD inline void philox_mulhilo(uint32_t a, uint32_t b, uint32_t& hi, uint32_t& lo) {
  const uint64_t p = static_cast<uint64_t>(a) * static_cast<uint64_t>(b);
  hi = static_cast<uint32_t>(p >> 32);
  lo = static_cast<uint32_t>(p);
}

// Ten rounds of Philox4x32 on counter `c` with key (k0, k1).
SPEAR_HD inline Philox4x32 philox4x32_10(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3,
                                          uint32_t k0, uint32_t k1) {
  constexpr uint32_t M0 = 0xD2511F53u, M1 = 0xCD9E8D57u;
  constexpr uint32_t W0 = 0x9E3779B9u, W1 = 0xBB67AE85u;
SPEAR_UNROLL
  for (int r = 0; r < 10; ++r) {
    uint32_t hi0, lo0, hi1, lo1;
    philox_mulhilo(M0, c0, hi0, lo0);
    philox_mulhilo(M1, c2, hi1, lo1);
    const uint32_t n0 = hi1 ^ c1 ^ k0;
    const uint32_t n2 = hi0 ^ c3 ^ k1;
    c0 = n0;
    c1 = lo1;
    c2 = n2;
    c3 = lo0;
    k0 += W0;
    k1 += W1;
  }
  return Philox4x32{{c0, c1, c2, c3}};
}

// The stream of 32-bit words that one sample consumes: word j of sample s under seed k
// is output (j % 4) of philox(counter = (s_lo, s_hi, j / 4, 0), key = (k_lo, k_hi)).
class SampleStream {
 public:
  SPEAR_HD SampleStream(uint64_t seed, uint64_t sample)
      : k0_(static_cast<uint32_t>(seed)), k1_(static_cast<uint32_t>(seed >> 32)),
        s0_(static_cast<uint32_t>(sample)), s1_(static_cast<uint32_t>(sample >> 32)),
        block_(0), used_(4) {}

  SPEAR_HD uint32_t next() {
    if (used_ == 4) {
      buf_ = philox4x32_10(s0_, s1_, block_, 0u, k0_, k1_);
      ++block_;
      used_ = 0;
    }
    return buf_.v[used_++];
  }

  // Continue at word 4 * block (the CPU kernel draws the first blocks of eight samples at
  // once and hands a sample that needs more words over to its scalar stream).
  SPEAR_HD void seek_block(uint32_t block) {
    block_ = block;
    used_ = 4;
  }

  // Integer in [0, n): multiply-shift (Lemire) without the rejection step. The bias is
  // below n / 2^32 and identical on every backend, which is what reproducibility needs.
  SPEAR_HD uint32_t below(uint32_t n) {
    return static_cast<uint32_t>((static_cast<uint64_t>(next()) * n) >> 32);
  }

 private:
  uint32_t k0_, k1_, s0_, s1_, block_, used_;
  Philox4x32 buf_{};
};

}  // namespace spear
