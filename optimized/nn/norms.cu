// LayerNorm and RMSNorm, forward and backward, fp32 statistics.
//
// ---- Napkin math ---------------------------------------------------------------------------------------
// Forward reads x once and writes y once (gamma/beta: cols elements, L2-resident; mean/rstd: 8 B/row):
// 8 B/elem fp32, 4 B/elem bf16. 8192 x 4096 fp32: 268 MB -> 80 us at 3.35 TB/s (H100 SXM).
// Backward reads x and dy, writes dx: 12 B/elem fp32 (6 bf16), 402 MB -> 120 us; dgamma/dbeta come out
// of the same pass (per-block partials: <= 512 x cols x 8 B = 16 MB at cols 4096, re-read once by the
// column reduction: +4%). ~10 flops per element: memory-bound by far.
//
// Shape (launch.h row_config): R threads per row, R = 32 (one warp; 8 rows per 256-thread block) up to
// 512 (one block per row; cols <= 8192, or 4096 on the scalar path), chosen so each thread caches at most 16 elements of the row in registers:
// (8 on the scalar path, whose backward would not fit 128 registers with 16) x is read from HBM once, the mean, the variance (two-pass: sum (x - mean)^2 over the cached
// values, no E[x^2] - mean^2 cancellation) and y all come from registers. Rows whose length is a
// multiple of the 16-byte vector take 16-byte loads; other rows (ragged cols) take scalar loads.
// Sums: each thread adds its elements in a fixed order, then a warp xor-tree, then the row's warps in
// order (row_sum): deterministic.
//
// Backward: a fixed number of blocks (<= 512, a function of the shape) each walk a contiguous chunk of
// rows; a thread accumulates dy * xhat and dy for its (fixed) columns in registers across the chunk,
// the block's row groups are added in order through shared memory, and block b writes partial row b.
// The column reduction (columns.cu) then sums the partials in a fixed order: dgamma and dbeta are
// bit-identical run to run, with no float atomics.
#include "optimized/nn/device.cuh"
#include "optimized/nn/layers.h"

namespace gauge::optimized::nn {
namespace detail {
namespace {

constexpr int kMaxWarps = launch::kMaxRowThreads / 32;

struct NormForwardArgs {
  const void* x;
  const void* gamma;
  const void* beta;  // LayerNorm only
  void* y;
  float* mean;  // LayerNorm only
  float* rstd;
  int64_t rows;
  int64_t cols;
  float eps;
  int threads_per_row;
  int rows_per_block;
};

// The row's vectors this thread caches: v = local + j R, j < kCache / V.
template <int V>
struct RowSlots {
  static constexpr int kSlots = launch::row_elements_per_thread(V) / V;
};

template <class T, int V, bool kLayerNorm>
__global__ void __launch_bounds__(launch::kMaxRowThreads) norm_forward_kernel(const NormForwardArgs a) {
  constexpr int kSlots = RowSlots<V>::kSlots;
  __shared__ float scratch[kMaxWarps];
  const int R = a.threads_per_row;
  const int local = static_cast<int>(threadIdx.x) % R;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * a.rows_per_block + static_cast<int>(threadIdx.x) / R;
  const bool valid = row < a.rows;
  const int vectors = static_cast<int>(a.cols / V);  // V divides cols (V = 1 on the ragged path)
  const T* x = static_cast<const T*>(a.x) + (valid ? row : 0) * a.cols;

  float v[kSlots][V];
  float sum = 0.0f;
#pragma unroll
  for (int j = 0; j < kSlots; ++j) {
    const int vec = local + j * R;  // in-row indices fit 32 bits (cols <= 8192)
    if (valid && vec < vectors) {
      load_vector<T, V>(x + vec * V, v[j]);
    } else {
#pragma unroll
      for (int k = 0; k < V; ++k) v[j][k] = 0.0f;
    }
#pragma unroll
    for (int k = 0; k < V; ++k) sum += v[j][k];
  }
  const float n = static_cast<float>(a.cols);
  float mean = 0.0f;
  float squares = 0.0f;
  if constexpr (kLayerNorm) {
    mean = row_sum(sum, R, scratch) / n;
#pragma unroll
    for (int j = 0; j < kSlots; ++j) {
      const int vec = local + j * R;  // in-row indices fit 32 bits (cols <= 8192)
      if (vec < vectors) {
#pragma unroll
        for (int k = 0; k < V; ++k) squares = fmaf(v[j][k] - mean, v[j][k] - mean, squares);
      }
    }
  } else {
#pragma unroll
    for (int j = 0; j < kSlots; ++j) {
#pragma unroll
      for (int k = 0; k < V; ++k) squares = fmaf(v[j][k], v[j][k], squares);
    }
  }
  const float rstd = 1.0f / sqrtf(row_sum(squares, R, scratch) / n + a.eps);
  if (!valid) return;  // no block-wide synchronization below
  if (local == 0) {
    if constexpr (kLayerNorm) a.mean[row] = mean;
    a.rstd[row] = rstd;
  }
  T* y = static_cast<T*>(a.y) + row * a.cols;
#pragma unroll
  for (int j = 0; j < kSlots; ++j) {
    const int vec = local + j * R;  // in-row indices fit 32 bits (cols <= 8192)
    if (vec >= vectors) continue;
    float g[V], out[V];
    load_vector<T, V>(static_cast<const T*>(a.gamma) + vec * V, g);
    if constexpr (kLayerNorm) {
      float b[V];
      load_vector<T, V>(static_cast<const T*>(a.beta) + vec * V, b);
#pragma unroll
      for (int k = 0; k < V; ++k) out[k] = fmaf((v[j][k] - mean) * rstd, g[k], b[k]);
    } else {
#pragma unroll
      for (int k = 0; k < V; ++k) out[k] = (v[j][k] * rstd) * g[k];
    }
    store_vector<T, V>(y + vec * V, out);
  }
}

struct NormBackwardArgs {
  const void* x;
  const void* gamma;
  const float* mean;  // LayerNorm only
  const float* rstd;
  const void* dy;
  void* dx;                 // may be null
  float* dgamma_partials;   // [blocks, cols] or null
  float* dbeta_partials;    // [blocks, cols] or null (LayerNorm only)
  int64_t rows;
  int64_t cols;
  int64_t rows_per_chunk;
  int threads_per_row;
  int rows_per_block;
};

// 256 threads x 16 cached elements: the block's row groups' accumulators, [element][thread] so that a
// warp's stores hit 32 different banks.
constexpr int kGroupScratch = launch::kRowBlockThreads * launch::kRowElementsPerThread;

template <class T, int V, bool kLayerNorm>
__global__ void __launch_bounds__(launch::kMaxRowThreads) norm_backward_kernel(const NormBackwardArgs a) {
  constexpr int kSlots = RowSlots<V>::kSlots;
  __shared__ float scratch[kMaxWarps];
  extern __shared__ float group_sums[];  // kGroupScratch floats when rows_per_block > 1
  const int R = a.threads_per_row;
  const int local = static_cast<int>(threadIdx.x) % R;
  const int group = static_cast<int>(threadIdx.x) / R;
  const int vectors = static_cast<int>(a.cols / V);
  const float n = static_cast<float>(a.cols);
  const int64_t begin = static_cast<int64_t>(blockIdx.x) * a.rows_per_chunk;
  const int64_t end = min(a.rows, begin + a.rows_per_chunk);

  float dgamma[kSlots][V] = {};
  float dbeta[kSlots][V] = {};

  // Every thread of the block runs the same number of iterations (row_sum synchronizes the block).
  for (int64_t base = begin; base < end; base += a.rows_per_block) {
    const int64_t row = base + group;
    const bool valid = row < end;
    const T* x = static_cast<const T*>(a.x) + (valid ? row : 0) * a.cols;
    const T* dy = static_cast<const T*>(a.dy) + (valid ? row : 0) * a.cols;
    const float mean = (kLayerNorm && valid) ? a.mean[row] : 0.0f;
    const float rstd = valid ? a.rstd[row] : 0.0f;
    float xhat[kSlots][V], g[kSlots][V];
    float g_sum = 0.0f, gx_sum = 0.0f;
#pragma unroll
    for (int j = 0; j < kSlots; ++j) {
      const int vec = local + j * R;  // in-row indices fit 32 bits (cols <= 8192)
      float xv[V], dyv[V], gamma[V];
      if (valid && vec < vectors) {
        load_vector<T, V>(x + vec * V, xv);
        load_vector<T, V>(dy + vec * V, dyv);
        load_vector<T, V>(static_cast<const T*>(a.gamma) + vec * V, gamma);  // L1/L2 hit after the first row
      } else {
#pragma unroll
        for (int k = 0; k < V; ++k) xv[k] = dyv[k] = gamma[k] = 0.0f;
      }
#pragma unroll
      for (int k = 0; k < V; ++k) {
        xhat[j][k] = (xv[k] - mean) * rstd;
        g[j][k] = dyv[k] * gamma[k];
        g_sum += g[j][k];
        gx_sum = fmaf(g[j][k], xhat[j][k], gx_sum);
        dgamma[j][k] = fmaf(dyv[k], xhat[j][k], dgamma[j][k]);
        if constexpr (kLayerNorm) dbeta[j][k] += dyv[k];
      }
    }
    if (a.dx == nullptr) continue;  // uniform across the block
    const float g_mean = kLayerNorm ? row_sum(g_sum, R, scratch) / n : 0.0f;
    const float gx_mean = row_sum(gx_sum, R, scratch) / n;
    if (!valid) continue;
    T* dx = static_cast<T*>(a.dx) + row * a.cols;
#pragma unroll
    for (int j = 0; j < kSlots; ++j) {
      const int vec = local + j * R;
      if (vec >= vectors) continue;
      float out[V];
#pragma unroll
      for (int k = 0; k < V; ++k) out[k] = rstd * (g[j][k] - g_mean - xhat[j][k] * gx_mean);
      store_vector<T, V>(dx + vec * V, out);
    }
  }

  // Row groups of the block -> one partial row, groups added in order.
  const auto write_partials = [&](float (&acc)[kSlots][V], float* partials) {
    if (partials == nullptr) return;
    if (a.rows_per_block > 1) {
      __syncthreads();
#pragma unroll
      for (int j = 0; j < kSlots; ++j) {
#pragma unroll
        for (int k = 0; k < V; ++k) group_sums[(j * V + k) * blockDim.x + threadIdx.x] = acc[j][k];
      }
      __syncthreads();
      if (group != 0) return;
#pragma unroll
      for (int j = 0; j < kSlots; ++j) {
#pragma unroll
        for (int k = 0; k < V; ++k) {
          float total = 0.0f;
          for (int q = 0; q < a.rows_per_block; ++q) total += group_sums[(j * V + k) * blockDim.x + q * R + local];
          acc[j][k] = total;
        }
      }
    }
    float* out = partials + static_cast<int64_t>(blockIdx.x) * a.cols;
#pragma unroll
    for (int j = 0; j < kSlots; ++j) {
      const int vec = local + j * R;  // in-row indices fit 32 bits (cols <= 8192)
      if (vec >= vectors) continue;
#pragma unroll
      for (int k = 0; k < V; ++k) out[vec * V + k] = acc[j][k];
    }
  };
  write_partials(dgamma, a.dgamma_partials);
  if constexpr (kLayerNorm) write_partials(dbeta, a.dbeta_partials);
}

void require_norm(const char* function, const NormShape& s, DType storage) {
  require_non_negative(function, "rows", s.rows);
  require_non_negative(function, "cols", s.cols);
  require_storage(function, storage);
  if (s.rows > 0) {
    const int64_t widest = launch::max_row_cols(s.cols, dtype_size(storage));
    if (s.cols == 0 || s.cols > widest) {
      throw UsageError(std::string(function) + ": cols is " + std::to_string(s.cols) + ", must be in [1, " +
                       std::to_string(widest) + "] for " + std::string(dtype_name(storage)) + " rows of this length");
    }
  }
  if (!(s.eps >= 0.0f) || !(s.eps <= 3.4e38f)) {
    throw UsageError(std::string(function) + ": eps is " + std::to_string(s.eps) + ", must be finite and >= 0");
  }
}

void require_present(const char* function, std::initializer_list<std::pair<const char*, const void*>> pointers) {
  for (const auto& [name, p] : pointers) {
    if (p == nullptr) throw UsageError(std::string(function) + ": " + name + " is null");
    require_aligned(function, name, p);
  }
}

template <bool kLayerNorm>
void launch_forward(const char* function, const NormShape& s, DType storage, NormForwardArgs a, StreamHandle stream) {
  require_norm(function, s, storage);
  if (s.rows == 0) return;
  require_present(function, {{"x", a.x}, {"gamma", a.gamma}, {"y", a.y}, {"rstd", a.rstd}});
  if constexpr (kLayerNorm) require_present(function, {{"beta", a.beta}, {"mean", a.mean}});
  dispatch_storage(storage, [&](auto tag) {
    using T = decltype(tag);
    constexpr int kV = launch::vector_width(sizeof(T));
    const launch::RowConfig c = launch::row_config(s.cols, sizeof(T));
    a.threads_per_row = c.threads_per_row;
    a.rows_per_block = c.rows_per_block;
    const auto blocks = static_cast<unsigned>(launch::ceil_div(s.rows, c.rows_per_block));
    const auto st = static_cast<cudaStream_t>(stream);
    if (c.vector == kV) {
      norm_forward_kernel<T, kV, kLayerNorm><<<blocks, c.block_threads, 0, st>>>(a);
    } else {
      norm_forward_kernel<T, 1, kLayerNorm><<<blocks, c.block_threads, 0, st>>>(a);
    }
  });
  check_launch(function);
}

template <bool kLayerNorm>
void launch_backward(const char* function, const NormShape& s, DType storage, NormBackwardArgs a, float* dgamma,
                     float* dbeta, void* workspace, StreamHandle stream) {
  require_norm(function, s, storage);
  require_aligned(function, "dx", a.dx);
  require_aligned(function, "dgamma", dgamma);
  require_aligned(function, "dbeta", dbeta);
  const auto st = static_cast<cudaStream_t>(stream);
  if (s.rows == 0) {
    if (dgamma != nullptr) reduce_partials(nullptr, 0, s.cols, dgamma, st);
    if (dbeta != nullptr) reduce_partials(nullptr, 0, s.cols, dbeta, st);
    return;
  }
  require_present(function, {{"x", a.x}, {"gamma", a.gamma}, {"rstd", a.rstd}, {"dy", a.dy}});
  if constexpr (kLayerNorm) require_present(function, {{"mean", a.mean}});
  if (a.dx == nullptr && dgamma == nullptr && dbeta == nullptr) return;
  const bool partials = dgamma != nullptr || dbeta != nullptr;
  if (partials) require_present(function, {{"workspace", workspace}});
  dispatch_storage(storage, [&](auto tag) {
    using T = decltype(tag);
    constexpr int kV = launch::vector_width(sizeof(T));
    const launch::NormBackwardPlan p = launch::norm_backward_plan(s.rows, s.cols, sizeof(T));
    a.threads_per_row = p.row.threads_per_row;
    a.rows_per_block = p.row.rows_per_block;
    a.rows_per_chunk = p.rows_per_block_chunk;
    auto* ws = static_cast<float*>(workspace);
    a.dgamma_partials = dgamma != nullptr ? ws : nullptr;
    a.dbeta_partials = dbeta != nullptr ? ws + p.blocks * s.cols : nullptr;
    const size_t shared = p.row.rows_per_block > 1 ? kGroupScratch * sizeof(float) : 0;
    const auto blocks = static_cast<unsigned>(p.blocks);
    if (p.row.vector == kV) {
      norm_backward_kernel<T, kV, kLayerNorm><<<blocks, p.row.block_threads, shared, st>>>(a);
    } else {
      norm_backward_kernel<T, 1, kLayerNorm><<<blocks, p.row.block_threads, shared, st>>>(a);
    }
    check_launch(function);
    if (dgamma != nullptr) reduce_partials(a.dgamma_partials, p.blocks, s.cols, dgamma, st);
    if (dbeta != nullptr) reduce_partials(a.dbeta_partials, p.blocks, s.cols, dbeta, st);
  });
}

}  // namespace
}  // namespace detail

size_t norm_backward_workspace_bytes(const NormShape& s) {
  if (s.rows <= 0 || s.cols <= 0) return 0;
  // dgamma and dbeta partials; the block count for 2-byte storage is never smaller than for 4-byte.
  const int64_t blocks = std::max(launch::norm_backward_plan(s.rows, s.cols, 4).blocks,
                                  launch::norm_backward_plan(s.rows, s.cols, 2).blocks);
  return static_cast<size_t>(2 * blocks * s.cols) * sizeof(float);
}

void layernorm_forward(const NormShape& s, DType storage, const void* x, const void* gamma, const void* beta, void* y,
                       float* mean, float* rstd, StreamHandle stream) {
  detail::launch_forward<true>("layernorm_forward", s, storage,
                               {x, gamma, beta, y, mean, rstd, s.rows, s.cols, s.eps, 0, 0}, stream);
}

void rmsnorm_forward(const NormShape& s, DType storage, const void* x, const void* gamma, void* y, float* rstd,
                     StreamHandle stream) {
  detail::launch_forward<false>("rmsnorm_forward", s, storage,
                                {x, gamma, nullptr, y, nullptr, rstd, s.rows, s.cols, s.eps, 0, 0}, stream);
}

void layernorm_backward(const NormShape& s, DType storage, const void* x, const void* gamma, const float* mean,
                        const float* rstd, const void* dy, void* dx, float* dgamma, float* dbeta, void* workspace,
                        StreamHandle stream) {
  detail::launch_backward<true>("layernorm_backward", s, storage,
                                {x, gamma, mean, rstd, dy, dx, nullptr, nullptr, s.rows, s.cols, 0, 0, 0}, dgamma,
                                dbeta, workspace, stream);
}

void rmsnorm_backward(const NormShape& s, DType storage, const void* x, const void* gamma, const float* rstd,
                      const void* dy, void* dx, float* dgamma, void* workspace, StreamHandle stream) {
  detail::launch_backward<false>("rmsnorm_backward", s, storage,
                                 {x, gamma, nullptr, rstd, dy, dx, nullptr, nullptr, s.rows, s.cols, 0, 0, 0}, dgamma,
                                 nullptr, workspace, stream);
}

}  // namespace gauge::optimized::nn
