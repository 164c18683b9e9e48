// Launch arithmetic of the fp32 <-> 16-bit cast kernels (optimized/precision/casts.cu). It is plain
// constexpr C++ with no CUDA dependency, so a CPU test can check that the scalar head, the 16-byte
// vector body and the scalar tail cover [0, n) exactly once for any pointers; the kernels call the
// same functions (--expt-relaxed-constexpr), so what the test checks is what runs.
#pragma once

#include <algorithm>
#include <cstdint>

namespace gauge::optimized::precision::cast_launch {

inline constexpr int64_t kVectorBytes = 16;
// One vector step converts 8 elements: one 16-byte access on the 16-bit side and two on the fp32 side.
inline constexpr int64_t kElementsPerVector = 8;
inline constexpr int kThreadsPerBlock = 256;
// 8 blocks of 256 threads fill an sm_80 / sm_90 SM (2048 threads), so a grid of SMs x 8 blocks keeps
// 32 bytes of loads in flight per thread, ~64 KiB per SM: far more than latency x bandwidth needs.
inline constexpr int kBlocksPerSm = 8;

// Elements [0, head) and [body_end(), n) are converted one at a time; [head, body_end()) in vector
// steps of kElementsPerVector whose first element is 16-byte aligned in both buffers.
struct Split {
  int64_t head = 0;
  int64_t vectors = 0;
  int64_t tail = 0;

  constexpr int64_t body_end() const { return head + vectors * kElementsPerVector; }
  constexpr int64_t scalar_count() const { return head + tail; }
  // The element converted by scalar step j, for j in [0, scalar_count()).
  constexpr int64_t scalar_index(int64_t j) const { return j < head ? j : body_end() + (j - head); }
  // The first element converted by vector step v, for v in [0, vectors).
  constexpr int64_t vector_first(int64_t v) const { return head + v * kElementsPerVector; }
};

constexpr bool naturally_aligned(uintptr_t address, int element_bytes) {
  return address % static_cast<uintptr_t>(element_bytes) == 0;
}

// The first element index at which both buffers are 16-byte aligned, or -1 when there is none (the
// buffers sit in different phases modulo 16 bytes, or a pointer is not aligned to its element). The
// alignment pattern of a buffer of k-byte elements repeats every 16 / k elements, so 16 candidates
// cover every element size from 1 to 16 bytes.
constexpr int64_t common_vector_start(uintptr_t in_address, int in_element_bytes, uintptr_t out_address,
                                      int out_element_bytes) {
  for (int64_t h = 0; h < kVectorBytes; ++h) {
    const uintptr_t in_at = in_address + static_cast<uintptr_t>(h * in_element_bytes);
    const uintptr_t out_at = out_address + static_cast<uintptr_t>(h * out_element_bytes);
    if (in_at % kVectorBytes == 0 && out_at % kVectorBytes == 0) return h;
  }
  return -1;
}

// How n elements are shared between the scalar edges and the vector body. When no common aligned
// start exists, every element takes the scalar path: still coalesced, just narrower accesses.
constexpr Split split_cast(int64_t n, uintptr_t in_address, int in_element_bytes, uintptr_t out_address,
                           int out_element_bytes) {
  const int64_t start = common_vector_start(in_address, in_element_bytes, out_address, out_element_bytes);
  if (start < 0 || start >= n) return Split{n, 0, 0};
  const int64_t vectors = (n - start) / kElementsPerVector;
  return Split{start, vectors, n - start - vectors * kElementsPerVector};
}

// One thread per vector step (or per scalar element, whichever is more), capped at one full wave of
// resident blocks; beyond that each thread strides over the rest, so the launch never grows with n.
constexpr int grid_blocks(const Split& split, int sm_count) {
  const int64_t work_items = std::max(split.vectors, split.scalar_count());
  const int64_t wanted = (work_items + kThreadsPerBlock - 1) / kThreadsPerBlock;
  const int64_t one_wave = static_cast<int64_t>(std::max(sm_count, 1)) * kBlocksPerSm;
  return static_cast<int>(std::clamp<int64_t>(wanted, 1, one_wave));
}

}  // namespace gauge::optimized::precision::cast_launch
