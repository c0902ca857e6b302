// What a sampling run returns, whichever backend ran it.
#pragma once

#include <cstdint>
#include <vector>

namespace spear {

template <typename T>
struct SampleResult {
  std::vector<T> q;              // accepted unit candidates, row-major (count x b)
  std::vector<int32_t> zeros;    // zero count of each candidate
  std::vector<int64_t> index;    // sample index that produced each candidate (ascending)
  int64_t evaluated = 0;         // samples evaluated
  int64_t accepted_total = 0;    // accepted before truncation to max_candidates
};

}  // namespace spear
