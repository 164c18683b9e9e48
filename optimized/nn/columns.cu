// Deterministic column sums: dbias of Linear (column sums of dy) and the second stage of the norms'
// dgamma / dbeta. No float atomics: every sum has one fixed order for a given shape (launch.h).
//
// ---- Napkin math ---------------------------------------------------------------------------------------
// Stage 1 reads the [rows, cols] matrix once (4 or 2 B/elem) and writes chunks x cols fp32 partials;
// column_plan keeps the partials at <= 1/64 of the input for big inputs (>= 64 rows per chunk), and
// ~1024 blocks in flight. Stage 2 reads the partials once. dbias of 8192 x 4096 fp32 dy: 134 MB ->
// 40 us at 3.35 TB/s; the partials (32 chunks x 4096 x 4 B = 0.5 MB) are noise. Memory-bound.
//
// Stage 1 block: 8 warps; lane l owns columns (tile * 32 + l) * V .. + V - 1 (16-byte loads, a warp
// reads 512 contiguous bytes of a row), warp w takes rows w, w + 8, ... of the chunk; the 8 warps'
// sums are added in warp order through shared memory. Stage 2 block: 32 columns x 8 slices, slice s
// sums partials s, s + 8, ... in order, then the slices in order.
#include "optimized/nn/device.cuh"
#include "optimized/nn/layers.h"

namespace gauge::optimized::nn {
namespace detail {

namespace {

constexpr int kWarps = launch::kColumnTileWarps;

template <class T, int V>
__global__ void __launch_bounds__(32 * kWarps)
    column_partials_kernel(const T* __restrict__ m, float* __restrict__ partials, int64_t rows, int64_t cols,
                           int64_t rows_per_chunk) {
  __shared__ float sums[kWarps][32 * V];
  const int lane = static_cast<int>(threadIdx.x) % 32;
  const int warp = static_cast<int>(threadIdx.x) / 32;
  const int64_t col = (static_cast<int64_t>(blockIdx.x) * 32 + lane) * V;
  const int64_t begin = static_cast<int64_t>(blockIdx.y) * rows_per_chunk;
  const int64_t end = min(rows, begin + rows_per_chunk);
  float acc[V] = {};
  if (col < cols) {
    for (int64_t r = begin + warp; r < end; r += kWarps) {
      float v[V];
      load_vector<T, V>(m + r * cols + col, v);
#pragma unroll
      for (int k = 0; k < V; ++k) acc[k] += v[k];
    }
  }
#pragma unroll
  for (int k = 0; k < V; ++k) sums[warp][lane * V + k] = acc[k];
  __syncthreads();
  // Thread t of the block finishes column tile element t (32 V elements, 256 threads).
  for (int e = static_cast<int>(threadIdx.x); e < 32 * V; e += 32 * kWarps) {
    const int64_t c = static_cast<int64_t>(blockIdx.x) * 32 * V + e;
    if (c >= cols) continue;
    float total = 0.0f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) total += sums[w][e];
    partials[static_cast<int64_t>(blockIdx.y) * cols + c] = total;
  }
}

constexpr int kSlices = 8;

__global__ void __launch_bounds__(32 * kSlices)
    reduce_partials_kernel(const float* __restrict__ partials, int64_t count, int64_t cols, float* __restrict__ out) {
  __shared__ float sums[kSlices][33];
  const int lane = static_cast<int>(threadIdx.x) % 32;
  const int slice = static_cast<int>(threadIdx.x) / 32;
  const int64_t col = static_cast<int64_t>(blockIdx.x) * 32 + lane;
  float acc = 0.0f;
  if (col < cols) {
    for (int64_t p = slice; p < count; p += kSlices) acc += partials[p * cols + col];
  }
  sums[slice][lane] = acc;
  __syncthreads();
  if (slice == 0 && col < cols) {
    float total = 0.0f;
#pragma unroll
    for (int s = 0; s < kSlices; ++s) total += sums[s][lane];
    out[col] = total;
  }
}

}  // namespace

void reduce_partials(const float* partials, int64_t count, int64_t cols, float* out, cudaStream_t stream) {
  if (cols == 0) return;
  if (count == 0) {
    check_cuda(cudaMemsetAsync(out, 0, static_cast<size_t>(cols) * sizeof(float), stream), "column sum: zero fill");
    return;
  }
  const auto blocks = static_cast<unsigned>(launch::ceil_div(cols, 32));
  reduce_partials_kernel<<<blocks, 32 * kSlices, 0, stream>>>(partials, count, cols, out);
  check_launch("column sum: reduce partials");
}

}  // namespace detail

size_t column_sum_workspace_bytes(int64_t rows, int64_t cols) {
  if (rows <= 0 || cols <= 0) return 0;
  // The plan's chunk count does not depend on the element size beyond the vector width; take the
  // larger of the two counts so one size serves every storage dtype.
  const int64_t chunks = std::max(launch::column_plan(rows, cols, 4).chunks, launch::column_plan(rows, cols, 2).chunks);
  return static_cast<size_t>(chunks * cols) * sizeof(float);
}

void column_sum(int64_t rows, int64_t cols, DType storage, const void* m, float* out, void* workspace,
                StreamHandle stream) {
  constexpr const char* kName = "column_sum";
  detail::require_non_negative(kName, "rows", rows);
  detail::require_non_negative(kName, "cols", cols);
  detail::require_storage(kName, storage);
  if (cols > 0 && out == nullptr) throw UsageError("column_sum: null output");
  if (rows > 0 && cols > 0 && (m == nullptr || workspace == nullptr)) throw UsageError("column_sum: null input or workspace");
  detail::require_aligned(kName, "input", m);
  detail::require_aligned(kName, "output", out);
  detail::require_aligned(kName, "workspace", workspace);
  const auto s = static_cast<cudaStream_t>(stream);
  if (rows == 0 || cols == 0) {
    detail::reduce_partials(nullptr, 0, cols, out, s);
    return;
  }
  auto* partials = static_cast<float*>(workspace);
  int64_t chunks = 0;
  detail::dispatch_storage(storage, [&](auto tag) {
    using T = decltype(tag);
    const launch::ColumnPlan p = launch::column_plan(rows, cols, sizeof(T));
    chunks = p.chunks;
    const dim3 grid(static_cast<unsigned>(p.column_tiles), static_cast<unsigned>(p.chunks));
    constexpr int kV = launch::vector_width(sizeof(T));
    if (p.vector == kV) {
      detail::column_partials_kernel<T, kV><<<grid, 32 * detail::kWarps, 0, s>>>(static_cast<const T*>(m), partials,
                                                                                 rows, cols, p.rows_per_chunk);
    } else {
      detail::column_partials_kernel<T, 1><<<grid, 32 * detail::kWarps, 0, s>>>(static_cast<const T*>(m), partials,
                                                                                rows, cols, p.rows_per_chunk);
    }
  });
  detail::check_launch("column sum: partials");
  detail::reduce_partials(partials, chunks, cols, out, s);
}

}  // namespace gauge::optimized::nn
