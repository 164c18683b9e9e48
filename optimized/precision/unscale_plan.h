// Launch and tiling arithmetic of the fused unscale + Inf/NaN check (optimized/precision/loss_scale.cu):
// how a gradient list is cut into chunks, how a chunk splits into a scalar head, a 16-byte vector body
// and a scalar tail, the persistent grid size, and the layout of the plan's workspace. Plain constexpr
// C++ with no CUDA dependency, so suites/precision/loss_scaler_test.cc checks on the CPU exactly what
// the kernel runs (it calls these functions through --expt-relaxed-constexpr).
//
// Chunking. Each tensor's input and output arrays have the same element size, so they can be 16-byte
// aligned together only when their addresses share a phase modulo 16; the first such element index is
// the tensor's vector start h (or -1: every element takes the scalar path). A tensor is cut at
// h + k C (k >= 1): chunk 0 is [0, h + C) and carries the scalar head [0, h); the last chunk is clipped
// at n and carries the scalar tail. C is a multiple of every vector width, so every chunk's body
// starts on the tensor's vector grid. A tensor without a vector start is cut at k C. Empty tensors get
// no chunk. The chunking and the head / body / tail split are the optimizer's multi-tensor ones
// (optimized/optim/multi_tensor_plan.h), reused here: only the descriptor, the persistent grid and
// the vector start of an (in, out) pair are the unscale's own.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "optimized/optim/multi_tensor_plan.h"

namespace gauge::optimized::precision::unscale_plan {

namespace chunking = gauge::optimized::optim::plan;

inline constexpr int64_t kVectorBytes = 16;
// 16 Ki elements per chunk (the optimizer's): 64 KiB read + 64 KiB written for fp32 (half that for
// 16-bit). Each of 256 threads does 16 (fp32) or 8 (16-bit) vector steps per chunk, so the per-chunk
// setup (one 16-byte table entry and one 32-byte descriptor, both L2 hits) is noise, and 1e8 gradients
// are ~6,100 chunks shared by a persistent grid, so the load balance between blocks is within one chunk.
using chunking::kChunkElements;
inline constexpr int kThreadsPerBlock = 256;
// Vector steps a thread loads before it stores any: 4 x 16 bytes in flight per thread.
inline constexpr int kUnroll = 4;
// 8 blocks of 256 threads fill an sm_80 / sm_90 SM (2048 threads).
inline constexpr int kBlocksPerSm = 8;

constexpr int vector_width(int element_bytes) { return static_cast<int>(kVectorBytes) / element_bytes; }
static_assert(kChunkElements % vector_width(2) == 0 && kChunkElements % vector_width(4) == 0);

// The first element index at which both arrays (elements of `element_bytes`) are 16-byte aligned, or
// -1 when none exists or it lies at or beyond n. The pattern repeats every 16 / element_bytes elements.
constexpr int64_t vector_start(uintptr_t in_address, uintptr_t out_address, int element_bytes, int64_t n) {
  if (in_address % static_cast<uintptr_t>(element_bytes) != 0 || out_address % static_cast<uintptr_t>(element_bytes) != 0) {
    return -1;
  }
  for (int64_t h = 0; h < kVectorBytes / element_bytes; ++h) {
    const uintptr_t offset = static_cast<uintptr_t>(h * element_bytes);
    if ((in_address + offset) % kVectorBytes == 0 && (out_address + offset) % kVectorBytes == 0) {
      return h < n ? h : -1;
    }
  }
  return -1;
}

// One tensor as the kernel sees it (32 bytes).
struct Descriptor {
  const void* in = nullptr;
  void* out = nullptr;
  int64_t size = 0;
  int64_t vector_start = -1;
};
static_assert(sizeof(Descriptor) == 32 || sizeof(void*) != 8);

using chunking::Chunk;
using chunking::ChunkSplit;
using chunking::split_chunk;
constexpr int64_t chunk_count(int64_t n, int64_t start) { return chunking::chunks_of_tensor(n, start); }
constexpr Chunk chunk_at(uint32_t tensor, int64_t n, int64_t start, int64_t k) {
  return chunking::chunk_of_tensor(tensor, n, start, k);
}

// Every tensor's chunks, tensor by tensor. Throws std::length_error past 2^31 - 1 chunks or 2^32 tensors.
inline std::vector<Chunk> build_chunks(std::span<const Descriptor> tensors) {
  std::vector<int64_t> sizes, starts;
  for (const Descriptor& d : tensors) {
    sizes.push_back(d.size);
    starts.push_back(d.vector_start);
  }
  return chunking::build_chunk_table(sizes, starts);
}

// A persistent grid: one block per chunk up to one wave of resident blocks; blocks then stride over
// the chunk table, so the launch never grows with the list.
constexpr int grid_blocks(int64_t chunks, int sm_count) {
  const int64_t wave = static_cast<int64_t>(std::max(sm_count, 1)) * kBlocksPerSm;
  return static_cast<int>(std::clamp<int64_t>(chunks, 1, wave));
}

// Workspace: descriptors, then the chunk table, each 16-byte aligned.
constexpr size_t round_up16(size_t bytes) { return (bytes + 15) / 16 * 16; }
constexpr size_t workspace_bytes(size_t tensors, size_t chunks) {
  return round_up16(tensors * sizeof(Descriptor)) + chunks * sizeof(Chunk);
}
// At most one chunk more per tensor than ceil(n / C), whatever the alignment.
constexpr int64_t max_chunk_count(int64_t n) { return chunking::max_chunks_of_tensor(n); }

}  // namespace gauge::optimized::precision::unscale_plan
