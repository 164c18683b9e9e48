// The launch arithmetic of optimized/nn (launch.h), on the CPU: vector widths, the threads-per-row
// choice of the norm kernels, and the fixed chunking of the deterministic column reductions.
#include "optimized/nn/launch.h"

#include <gtest/gtest.h>

namespace gauge::optimized::nn::launch {
namespace {

TEST(NnLaunch, RowConfigCoversTheRow) {
  for (size_t bytes : {size_t{4}, size_t{2}}) {
    for (int64_t cols : {1, 3, 8, 64, 768, 771, 1001, 4096, 4097, 8192}) {
      if (cols > max_row_cols(cols, bytes)) continue;
      const RowConfig c = row_config(cols, bytes);
      SCOPED_TRACE(std::to_string(cols) + " cols, " + std::to_string(bytes) + " B");
      EXPECT_EQ(cols % c.vector, 0);
      EXPECT_GE(int64_t{c.threads_per_row} * c.vectors_per_thread * c.vector, cols);  // every element cached
      EXPECT_LE(c.threads_per_row, kMaxRowThreads);
      EXPECT_EQ(c.threads_per_row % 32, 0);
      EXPECT_EQ(c.block_threads, c.threads_per_row * c.rows_per_block);
      EXPECT_LE(c.block_threads, kMaxRowThreads);
      if (c.threads_per_row > 32) {
        EXPECT_LT(int64_t{c.threads_per_row / 2} * c.vectors_per_thread * c.vector, cols);  // the smallest R
      }
    }
  }
  EXPECT_EQ(row_config(4096, 4).vector, 4);
  EXPECT_EQ(row_config(4096, 4).threads_per_row, 256);  // 1024 vectors / 4 per thread
  EXPECT_EQ(row_config(4096, 2).vector, 8);
  EXPECT_EQ(row_config(771, 4).vector, 1);              // ragged: scalar path
  EXPECT_EQ(row_config(768, 4).threads_per_row, 64);
  EXPECT_EQ(row_config(768, 4).rows_per_block, 4);
  EXPECT_EQ(max_row_cols(8192, 4), 8192);
  EXPECT_EQ(max_row_cols(4097, 4), 4096);
}

TEST(NnLaunch, ColumnPlanIsAFunctionOfTheShapeAndCoversEveryRow) {
  for (int64_t rows : {1, 7, 64, 65, 1000, 8192, 100000}) {
    for (int64_t cols : {1, 17, 768, 4096, 4099}) {
      const ColumnPlan p = column_plan(rows, cols, 4);
      SCOPED_TRACE(std::to_string(rows) + " x " + std::to_string(cols));
      EXPECT_GE(p.chunks * p.rows_per_chunk, rows);
      EXPECT_LT((p.chunks - 1) * p.rows_per_chunk, rows);  // no empty chunk
      EXPECT_GE(p.column_tiles * 32 * p.vector, cols);
      EXPECT_LE(p.chunks, kTargetBlocks);
      const ColumnPlan again = column_plan(rows, cols, 4);
      EXPECT_EQ(again.chunks, p.chunks);
      EXPECT_EQ(again.rows_per_chunk, p.rows_per_chunk);
    }
  }
  EXPECT_EQ(column_plan(8192, 4096, 4).column_tiles, 32);
  EXPECT_EQ(column_plan(8192, 4096, 4).chunks, 32);  // 1024 blocks, 256 rows each
}

TEST(NnLaunch, NormBackwardPlanCoversEveryRowInWholeGroups) {
  for (int64_t rows : {1, 3, 8, 9, 33, 1000, 8192, 100001}) {
    for (int64_t cols : {64, 768, 771, 4096}) {
      const NormBackwardPlan p = norm_backward_plan(rows, cols, 4);
      SCOPED_TRACE(std::to_string(rows) + " x " + std::to_string(cols));
      EXPECT_EQ(p.rows_per_block_chunk % p.row.rows_per_block, 0);
      EXPECT_GE(p.blocks * p.rows_per_block_chunk, rows);
      EXPECT_LT((p.blocks - 1) * p.rows_per_block_chunk, rows);
      EXPECT_LE(p.blocks, kNormBackwardMaxBlocks);
    }
  }
}

TEST(NnLaunch, PointwiseGrid) {
  EXPECT_EQ(pointwise_blocks(1, 4), 1);
  EXPECT_EQ(pointwise_blocks(1024, 4), 1);
  EXPECT_EQ(pointwise_blocks(1025, 4), 2);
  EXPECT_EQ(pointwise_blocks(int64_t{1} << 32, 4), kPointwiseMaxBlocks);
  EXPECT_TRUE(aligned16(reinterpret_cast<const void*>(uintptr_t{64})));
  EXPECT_FALSE(aligned16(reinterpret_cast<const void*>(uintptr_t{68})));
}

// Linear with in == 0 copies the bias into every row: 16-byte steps only when no step crosses a row.
TEST(NnLaunch, BiasBroadcastVector) {
  EXPECT_EQ(broadcast_vector(24, 4), 4);
  EXPECT_EQ(broadcast_vector(24, 2), 8);
  EXPECT_EQ(broadcast_vector(17, 4), 1);
  EXPECT_EQ(broadcast_vector(12, 2), 1);  // 24 bytes: every other row would start misaligned
  EXPECT_EQ(broadcast_vector(12, 4), 4);
  for (int64_t cols : {1, 3, 4, 8, 12, 17, 24, 4096}) {
    for (size_t bytes : {size_t{4}, size_t{2}}) {
      const int v = broadcast_vector(cols, bytes);
      EXPECT_EQ(cols % v, 0);
      EXPECT_TRUE(v == 1 || v * static_cast<int64_t>(bytes) == kVectorBytes);
      if (v > 1) {
        EXPECT_EQ(cols * static_cast<int64_t>(bytes) % kVectorBytes, 0);  // every row starts aligned
      }
    }
  }
}

}  // namespace
}  // namespace gauge::optimized::nn::launch
