// Launch arithmetic of the fp8 / tf32 casts, the stochastic-rounding kernels and the fused amax +
// scaled cast (optimized/precision/fp8_casts.cu, stochastic_round.cu, scaled_cast.cu): the split of
// optimized/precision/cast_launch.h (scalar head, 16-byte vector body, scalar tail, one launch)
// generalised to a vector step of any number of elements and to a vector body whose first element
// index is a multiple of `index_multiple` (stochastic rounding takes 4 Philox words per call, for
// elements 4q .. 4q+3, so its vector steps start on such a quad). Plain constexpr C++, tested on the
// CPU (suites/precision/fp8_launch_test.cc); the kernels call the same functions.
#pragma once

#include <algorithm>
#include <cstdint>

#include "optimized/precision/cast_launch.h"

namespace gauge::optimized::precision::fp8_launch {

using cast_launch::kBlocksPerSm;
using cast_launch::kThreadsPerBlock;
using cast_launch::kVectorBytes;
using cast_launch::naturally_aligned;

struct Split {
  int64_t head = 0;
  int64_t vectors = 0;
  int64_t tail = 0;
  int64_t elements_per_vector = 1;

  constexpr int64_t body_end() const { return head + vectors * elements_per_vector; }
  constexpr int64_t scalar_count() const { return head + tail; }
  constexpr int64_t scalar_index(int64_t j) const { return j < head ? j : body_end() + (j - head); }
  constexpr int64_t vector_first(int64_t v) const { return head + v * elements_per_vector; }
};

// The first element index h that is a multiple of `index_multiple` and at which both buffers are
// 16-byte aligned, or -1. Element sizes and index_multiple are powers of two up to 16, so the pattern
// repeats every 16 elements and 16 candidates decide.
constexpr int64_t common_vector_start(uintptr_t in_address, int in_element_bytes, uintptr_t out_address,
                                      int out_element_bytes, int64_t index_multiple) {
  for (int64_t h = 0; h < kVectorBytes; ++h) {
    if (h % index_multiple != 0) continue;
    const uintptr_t in_at = in_address + static_cast<uintptr_t>(h * in_element_bytes);
    const uintptr_t out_at = out_address + static_cast<uintptr_t>(h * out_element_bytes);
    if (in_at % kVectorBytes == 0 && out_at % kVectorBytes == 0) return h;
  }
  return -1;
}

constexpr Split split(int64_t n, uintptr_t in_address, int in_element_bytes, uintptr_t out_address,
                      int out_element_bytes, int64_t elements_per_vector, int64_t index_multiple = 1) {
  const int64_t start =
      common_vector_start(in_address, in_element_bytes, out_address, out_element_bytes, index_multiple);
  if (start < 0 || start >= n) return Split{n, 0, 0, elements_per_vector};
  const int64_t vectors = (n - start) / elements_per_vector;
  return Split{start, vectors, n - start - vectors * elements_per_vector, elements_per_vector};
}

// One thread per vector step (or scalar element), at most one wave of resident blocks and at most
// `max_blocks` (the fused amax kernels keep one partial per block in a fixed workspace).
constexpr int grid_blocks(const Split& s, int sm_count, int max_blocks = 1 << 30) {
  const int64_t work_items = std::max(s.vectors, s.scalar_count());
  const int64_t wanted = (work_items + kThreadsPerBlock - 1) / kThreadsPerBlock;
  const int64_t one_wave = static_cast<int64_t>(std::max(sm_count, 1)) * kBlocksPerSm;
  return static_cast<int>(std::clamp<int64_t>(wanted, 1, std::min<int64_t>(one_wave, max_blocks)));
}

}  // namespace gauge::optimized::precision::fp8_launch
