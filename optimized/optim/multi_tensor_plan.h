// Launch and tiling arithmetic of the fused multi-tensor optimizer kernels (optimized/optim/*.cu):
// which 16-byte vector grid each tensor uses, how a tensor list is cut into chunks (one thread block
// per chunk), how a chunk splits into a scalar head, a vector body and a scalar tail, and where
// everything sits in the plan's workspace. Plain constexpr C++ with no CUDA dependency, so the CPU
// test suites/optim/multi_tensor_plan_test.cc checks exactly what the kernels run (they call these
// functions through --expt-relaxed-constexpr).
//
// Chunking. A tensor of n elements whose arrays (param, grad, master, states) share a 16-byte aligned
// element index `vector_start` = h is cut at h + k * kChunkElements: chunk 0 is [0, h + C) (it carries
// the scalar head [0, h)), chunk k >= 1 is [h + k C, h + (k + 1) C), the last one clipped at n (it
// carries the scalar tail). Since C is a multiple of every vector width, every chunk's vector body
// starts on the tensor's vector grid. A tensor whose arrays cannot be aligned together (vector_start
// -1) is cut at k C and done one element at a time. Empty tensors get no chunk.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

namespace gauge::optimized::optim::plan {

inline constexpr int64_t kVectorBytes = 16;
// Elements per chunk: one block of kThreadsPerBlock threads does 16 (fp32, 4-wide) or 8 (bf16 modes,
// 8-wide) vector steps per thread per chunk. Small enough that a 1e8-parameter list is ~6,100 chunks
// (~5 waves of resident blocks on an H100, so the last wave's imbalance is small), large enough that
// the per-chunk setup (one 16-byte table entry and one 72-byte descriptor, both L2 hits) is noise.
inline constexpr int64_t kChunkElements = 16384;
inline constexpr int kThreadsPerBlock = 256;
inline constexpr int kWarpsPerBlock = kThreadsPerBlock / 32;
inline constexpr int kMaxStates = 3;  // Adam + amsgrad, RMSprop centered + momentum

// Elements per 16-byte vector step: 16 bytes of the narrowest array (fp32 lists: 4; lists with a
// bf16 array: 8, the fp32 arrays then take two 16-byte accesses per step).
constexpr int vector_width(int narrowest_element_bytes) {
  return static_cast<int>(kVectorBytes) / narrowest_element_bytes;
}
static_assert(kChunkElements % vector_width(2) == 0 && kChunkElements % vector_width(4) == 0);

// One array of a tensor: its device address and element size.
struct ArrayRef {
  uintptr_t address = 0;
  int element_bytes = 4;
};

constexpr bool naturally_aligned(const ArrayRef& a) {
  return a.address % static_cast<uintptr_t>(a.element_bytes) == 0;
}

// The first element index h at which every array is 16-byte aligned, or -1 when none exists (the
// arrays sit in different phases modulo 16 bytes, or one is not aligned to its element). The pattern
// of an array of k-byte elements repeats every 16 / k elements, so 16 candidates cover k in [1, 16].
constexpr int64_t common_vector_start(std::span<const ArrayRef> arrays) {
  for (int64_t h = 0; h < kVectorBytes; ++h) {
    bool all = true;
    for (const ArrayRef& a : arrays) {
      if ((a.address + static_cast<uintptr_t>(h * a.element_bytes)) % kVectorBytes != 0) {
        all = false;
        break;
      }
    }
    if (all) return h;
  }
  return -1;
}

// The tensor's vector start for n elements: -1 (all scalar) when no common start exists or it lies
// at or beyond n.
constexpr int64_t tensor_vector_start(int64_t n, std::span<const ArrayRef> arrays) {
  const int64_t h = common_vector_start(arrays);
  return (h < 0 || h >= n) ? -1 : h;
}

// One block's work: elements [begin, begin + count) of tensor `tensor`. 16 bytes, one load.
struct Chunk {
  uint32_t tensor = 0;
  uint32_t count = 0;  // at most kChunkElements + 15
  int64_t begin = 0;
};
static_assert(sizeof(Chunk) == 16);

constexpr int64_t chunk_origin(int64_t vector_start) { return vector_start < 0 ? 0 : vector_start; }

constexpr int64_t chunks_of_tensor(int64_t n, int64_t vector_start) {
  if (n <= 0) return 0;
  const int64_t first_end = std::min(n, chunk_origin(vector_start) + kChunkElements);
  return 1 + (n - first_end + kChunkElements - 1) / kChunkElements;
}

// Chunk k of a tensor, k in [0, chunks_of_tensor(n, vector_start)).
constexpr Chunk chunk_of_tensor(uint32_t tensor, int64_t n, int64_t vector_start, int64_t k) {
  const int64_t origin = chunk_origin(vector_start);
  const int64_t begin = k == 0 ? 0 : origin + k * kChunkElements;
  const int64_t end = std::min(n, origin + (k + 1) * kChunkElements);
  return Chunk{tensor, static_cast<uint32_t>(end - begin), begin};
}

// How one chunk is shared between one-element steps and `width`-element vector steps. The kernels'
// loops: vector step v in [0, vectors) covers [vector_first(v), +width); scalar step j in
// [0, scalar_count()) covers element scalar_index(j).
struct ChunkSplit {
  int64_t begin = 0;
  int64_t head = 0;  // scalar elements [begin, begin + head)
  int64_t vectors = 0;
  int64_t tail = 0;  // scalar elements after the body
  int width = 1;

  constexpr int64_t body_begin() const { return begin + head; }
  constexpr int64_t body_end() const { return body_begin() + vectors * width; }
  constexpr int64_t scalar_count() const { return head + tail; }
  constexpr int64_t vector_first(int64_t v) const { return body_begin() + v * width; }
  constexpr int64_t scalar_index(int64_t j) const { return j < head ? begin + j : body_end() + (j - head); }
};

// `vector_start` is the tensor's (tensor_vector_start); `width` the kernel's vector_width.
constexpr ChunkSplit split_chunk(int64_t begin, int64_t count, int64_t vector_start, int width) {
  if (vector_start < 0) return ChunkSplit{begin, count, 0, 0, width};
  const int64_t end = begin + count;
  // Chunk 0 starts at 0 <= vector_start; every later chunk starts on the grid (origin + k C).
  const int64_t body = std::max(begin, vector_start);
  if (body >= end) return ChunkSplit{begin, count, 0, 0, width};
  const int64_t vectors = (end - body) / width;
  return ChunkSplit{begin, body - begin, vectors, end - body - vectors * width, width};
}

// Every tensor's chunks, tensor by tensor. Throws std::length_error past 2^31 - 1 chunks or 2^32
// tensors (the grid is one block per chunk).
inline std::vector<Chunk> build_chunk_table(std::span<const int64_t> sizes, std::span<const int64_t> vector_starts) {
  if (sizes.size() != vector_starts.size()) throw std::invalid_argument("build_chunk_table: sizes and vector starts differ in length");
  if (sizes.size() > UINT32_MAX) throw std::length_error("build_chunk_table: more than 2^32 tensors");
  int64_t total = 0;
  for (size_t t = 0; t < sizes.size(); ++t) total += chunks_of_tensor(sizes[t], vector_starts[t]);
  if (total > INT32_MAX) throw std::length_error("build_chunk_table: " + std::to_string(total) + " chunks exceed one grid");
  std::vector<Chunk> table;
  table.reserve(static_cast<size_t>(total));
  for (size_t t = 0; t < sizes.size(); ++t) {
    const int64_t chunks = chunks_of_tensor(sizes[t], vector_starts[t]);
    for (int64_t k = 0; k < chunks; ++k) {
      table.push_back(chunk_of_tensor(static_cast<uint32_t>(t), sizes[t], vector_starts[t], k));
    }
  }
  return table;
}

// At most one chunk more per tensor than ceil(n / C), whatever the alignment: for workspace bounds.
constexpr int64_t max_chunks_of_tensor(int64_t n) {
  return n <= 0 ? 0 : (n + kChunkElements - 1) / kChunkElements + 1;
}

// One block per chunk, at least one block (the kernels also report the step's status and norm).
constexpr int grid_blocks(int64_t chunks) { return static_cast<int>(std::clamp<int64_t>(chunks, 1, INT32_MAX)); }

// The update kernel takes chunks in reverse order: the norm pre-pass read the gradients front to
// back, so the last chunks' gradients are the ones most likely still in L2.
constexpr int64_t update_chunk_of_block(int64_t block, int64_t chunks) { return chunks - 1 - block; }

// ---- Workspace ------------------------------------------------------------------------------------

// Step control block, written by the norm pre-pass (its last block) and read by the update kernel.
struct Control {
  float norm = 0.0f;         // global gradient L2 norm before clipping (NaN / Inf as the sum is)
  float scale = 1.0f;        // gradient multiplier: the clip coefficient when it is < 1 (or NaN), else 1
  int32_t skip = 0;          // 1: the update kernel leaves everything untouched
  uint32_t blocks_done = 0;  // last-block detection in the pre-pass; back to 0 when it ends
};
static_assert(sizeof(Control) == 16);

// The step number and step-dependent scalars of a counted step (StepPlan::step_counted): the
// pre-pass's last block writes them, for t = the device counter + 1, when it decides the step is
// applied; the update kernel then reads them instead of its parameters' (optimized/optim/
// step_scalars.h: step_dependent_scalars). Stale, and not read, when the step is skipped.
struct CountedStep {
  uint32_t step = 0;  // t (< 2^30): also the step number of the stochastic-rounding keys
  int32_t first_step = 0;
  float clr = 0;
  float step_size = 0;
  float bc2_sqrt = 1;
};
static_assert(sizeof(CountedStep) == 20);

inline constexpr size_t kWorkspaceAlignment = 256;
constexpr size_t align_up(size_t bytes) { return (bytes + kWorkspaceAlignment - 1) / kWorkspaceAlignment * kWorkspaceAlignment; }

// [control | counted step | descriptors | chunk table | per-chunk partial sums | per-chunk non-finite
// flags], each part 256-byte aligned. The first four are initialized at plan construction (the
// counted step to its defaults; an applied counted pre-pass rewrites it before its update reads it);
// every pre-pass writes all partials and flags before reading them.
struct WorkspaceLayout {
  size_t control = 0;
  size_t counted = 0;
  size_t descriptors = 0;
  size_t chunks = 0;
  size_t partials = 0;
  size_t flags = 0;
  size_t total = 0;
};

constexpr WorkspaceLayout workspace_layout(int64_t tensors, int64_t chunks, size_t descriptor_bytes) {
  WorkspaceLayout w;
  w.control = 0;
  w.counted = align_up(sizeof(Control));
  w.descriptors = w.counted + align_up(sizeof(CountedStep));
  w.chunks = w.descriptors + align_up(static_cast<size_t>(tensors) * descriptor_bytes);
  w.partials = w.chunks + align_up(static_cast<size_t>(chunks) * sizeof(Chunk));
  w.flags = w.partials + align_up(static_cast<size_t>(chunks) * sizeof(float));
  w.total = w.flags + align_up(static_cast<size_t>(chunks) * sizeof(uint32_t));
  return w;
}

// The StepPlan's per-tensor descriptor (multi_tensor_device.cuh asserts it) and the accumulation
// plan's.
inline constexpr size_t kStepDescriptorBytes = 72;
inline constexpr size_t kAccumulateDescriptorBytes = 32;

// Workspace of a StepPlan over tensors of these sizes, whatever their placement (alignment moves at
// most one chunk per tensor).
inline size_t step_workspace_bound(std::span<const int64_t> sizes) {
  int64_t chunks = 0;
  for (const int64_t n : sizes) chunks += max_chunks_of_tensor(n);
  return workspace_layout(static_cast<int64_t>(sizes.size()), chunks, kStepDescriptorBytes).total;
}

// An AccumulatePlan's workspace: [descriptors | grad pointer table [k][tensor] | chunk table].
struct AccumulateLayout {
  size_t descriptors = 0;
  size_t grad_table = 0;
  size_t chunks = 0;
  size_t total = 0;
};

constexpr AccumulateLayout accumulate_layout(int64_t tensors, int64_t micro_batches, int64_t chunks) {
  AccumulateLayout w;
  w.grad_table = align_up(static_cast<size_t>(tensors) * kAccumulateDescriptorBytes);
  w.chunks = w.grad_table + align_up(static_cast<size_t>(micro_batches * tensors) * sizeof(void*));
  w.total = w.chunks + align_up(static_cast<size_t>(chunks) * sizeof(Chunk));
  return w;
}

}  // namespace gauge::optimized::optim::plan
