// Launch arithmetic of optimized/nn, in plain C++ so that the CPU tests check it (suites/nn/launch_test.cc):
// vector widths, threads per row of the norm kernels, and the fixed partial counts of the
// deterministic column reductions. Everything here depends on the shape and dtype only (never on the
// device), which is what makes the reductions' order, and so their bits, reproducible.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>

namespace gauge::optimized::nn::launch {

inline constexpr int kVectorBytes = 16;

constexpr int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Elements per 16-byte access.
constexpr int vector_width(size_t element_bytes) { return kVectorBytes / static_cast<int>(element_bytes); }

constexpr bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

// ---- Row kernels (norms) ------------------------------------------------------------------------------
// A row of `cols` elements is split into "vectors" of V elements (V = 16 B / element, or 1 when rows
// cannot all start 16-byte aligned, i.e. cols % V != 0). R threads share a row, each caching at most
// kRowElementsPerThread elements in registers (so x, dy and the dgamma/dbeta accumulators of the
// backward stay within the 128 registers a 512-thread block allows). R is a power of two from 32 (one
// warp per row, several rows per block) to 512 (one block per row): cols <= 16 x 512 = 8192.
inline constexpr int kRowElementsPerThread = 16;
// The scalar (ragged-row) path caches 8: its backward's 16 single-element slots would spill.
constexpr int row_elements_per_thread(int vector) { return vector > 1 ? kRowElementsPerThread : 8; }
// The widest row the norm kernels take.
constexpr int64_t max_row_cols(int64_t cols, size_t element_bytes) {
  const int v = vector_width(element_bytes);
  return static_cast<int64_t>(row_elements_per_thread(cols % v == 0 ? v : 1)) * 512;
}
inline constexpr int kRowBlockThreads = 256;  // block size when a warp or a few warps take a row
inline constexpr int kMaxRowThreads = 512;

struct RowConfig {
  int vector = 1;            // V
  int vectors_per_thread = 1;  // kRowElementsPerThread / V: the register cache, in vectors
  int threads_per_row = 32;  // R
  int rows_per_block = 1;
  int block_threads = 32;
};

// cols <= max_row_cols(cols, element_bytes) is required by the caller.
constexpr RowConfig row_config(int64_t cols, size_t element_bytes) {
  RowConfig c;
  const int v = vector_width(element_bytes);
  c.vector = cols % v == 0 ? v : 1;
  c.vectors_per_thread = row_elements_per_thread(c.vector) / c.vector;
  const int64_t vectors = ceil_div(cols, c.vector);
  int r = 32;
  while (r < kMaxRowThreads && static_cast<int64_t>(r) * c.vectors_per_thread < vectors) r *= 2;
  c.threads_per_row = r;
  c.rows_per_block = std::max(1, kRowBlockThreads / r);
  c.block_threads = r * c.rows_per_block;
  return c;
}

// ---- Deterministic column reductions ------------------------------------------------------------------
// Stage 1: the rows are cut into `chunks` contiguous chunks; one block per (chunk, column tile) sums
// its rows in a fixed order and writes partial[chunk, col]. Stage 2: one thread column per block
// column sums the partials in a fixed order (8 row-slices, then a fixed tree). The chunk count is a
// function of (rows, cols) only: enough blocks to fill a big GPU (~1024 in stage 1) without letting
// the partials exceed ~1/8 of the input's bytes.
inline constexpr int kColumnTileWarps = 8;       // stage-1 block: 32 column lanes x 8 row slices
inline constexpr int kTargetBlocks = 1024;
inline constexpr int64_t kMinRowsPerChunk = 64;

struct ColumnPlan {
  int vector = 1;               // columns per lane
  int64_t column_tiles = 0;     // stage-1 grid.x: ceil(cols / (32 V))
  int64_t chunks = 0;           // stage-1 grid.y = partial rows
  int64_t rows_per_chunk = 0;
};

constexpr ColumnPlan column_plan(int64_t rows, int64_t cols, size_t element_bytes) {
  ColumnPlan p;
  const int v = vector_width(element_bytes);
  p.vector = cols % v == 0 ? v : 1;
  p.column_tiles = std::max<int64_t>(1, ceil_div(cols, 32 * static_cast<int64_t>(p.vector)));
  const int64_t wanted = std::max<int64_t>(1, kTargetBlocks / p.column_tiles);
  const int64_t by_rows = std::max<int64_t>(1, rows / kMinRowsPerChunk);
  p.chunks = std::min(wanted, by_rows);
  p.rows_per_chunk = std::max<int64_t>(1, ceil_div(rows, p.chunks));
  p.chunks = std::max<int64_t>(1, ceil_div(rows, p.rows_per_chunk));
  return p;
}

// The norm backward fuses stage 1 into the row kernel: `blocks` blocks each take a contiguous chunk
// of rows and write one fp32 partial row per reduced quantity (dgamma, dbeta).
inline constexpr int64_t kNormBackwardMaxBlocks = 512;

struct NormBackwardPlan {
  RowConfig row;
  int64_t blocks = 0;
  int64_t rows_per_block_chunk = 0;  // rows one block processes (a multiple of row.rows_per_block)
};

constexpr NormBackwardPlan norm_backward_plan(int64_t rows, int64_t cols, size_t element_bytes) {
  NormBackwardPlan p;
  p.row = row_config(cols, element_bytes);
  const int64_t groups = std::max<int64_t>(1, ceil_div(rows, p.row.rows_per_block));
  const int64_t blocks = std::min(groups, kNormBackwardMaxBlocks);
  p.rows_per_block_chunk = ceil_div(groups, blocks) * p.row.rows_per_block;
  p.blocks = std::max<int64_t>(1, ceil_div(rows, p.rows_per_block_chunk));
  return p;
}

// Elementwise kernels: 256 threads, each one 16-byte vector per grid-stride step, grid capped so a
// big tensor runs a few waves of resident blocks.
inline constexpr int kPointwiseThreads = 256;
inline constexpr int64_t kPointwiseMaxBlocks = 8192;

constexpr int64_t pointwise_blocks(int64_t n, int vector) {
  return std::clamp<int64_t>(ceil_div(ceil_div(n, vector), kPointwiseThreads), 1, kPointwiseMaxBlocks);
}

// Rows copied from one vector (Linear with in == 0: y = bias broadcast): 16-byte steps when every row
// starts 16-byte aligned (cols a multiple of the vector width), single elements otherwise.
constexpr int broadcast_vector(int64_t cols, size_t element_bytes) {
  const int v = vector_width(element_bytes);
  return cols % v == 0 ? v : 1;
}

// Softmax cross-entropy: one block per row; 256 threads for wide rows, 128 below 2048 classes.
constexpr int softmax_threads(int64_t classes) { return classes >= 2048 ? 256 : 128; }

}  // namespace gauge::optimized::nn::launch
