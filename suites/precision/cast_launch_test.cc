// The launch arithmetic of the CUDA casts, checked on the CPU: for every element count and every
// placement of the two buffers, the scalar head, the vector body and the scalar tail cover [0, n)
// exactly once, every vector step is 16-byte aligned on both sides, and the vector path is taken
// whenever the two buffers can be aligned together.

#include "optimized/precision/cast_launch.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

namespace gauge::optimized::precision::cast_launch {
namespace {

// Compile-time evaluation, so the kernels may call these through --expt-relaxed-constexpr.
static_assert(split_cast(100, 0x1000, 4, 0x2000, 2).head == 0);
static_assert(split_cast(100, 0x1000, 4, 0x2000, 2).vectors == 12);
static_assert(split_cast(100, 0x1000, 4, 0x2000, 2).tail == 4);
static_assert(grid_blocks(split_cast(0, 0x1000, 4, 0x2000, 2), 132) == 1);

struct Layout {
  int in_bytes;
  int out_bytes;
};
constexpr Layout kNarrowing{4, 2};  // fp32 -> bf16 / fp16
constexpr Layout kWidening{2, 4};   // bf16 / fp16 -> fp32

// The first index at which both buffers are 16-byte aligned, searched much further than the
// implementation needs to, or -1.
int64_t brute_force_common_start(uintptr_t in, int in_bytes, uintptr_t out, int out_bytes) {
  for (int64_t h = 0; h < 256; ++h) {
    if ((in + static_cast<uintptr_t>(h * in_bytes)) % 16 == 0 && (out + static_cast<uintptr_t>(h * out_bytes)) % 16 == 0) {
      return h;
    }
  }
  return -1;
}

void check_split(int64_t n, uintptr_t in, uintptr_t out, Layout layout) {
  SCOPED_TRACE("n=" + std::to_string(n) + " in=" + std::to_string(in) + " out=" + std::to_string(out) +
               " bytes " + std::to_string(layout.in_bytes) + "->" + std::to_string(layout.out_bytes));
  const Split split = split_cast(n, in, layout.in_bytes, out, layout.out_bytes);
  ASSERT_GE(split.head, 0);
  ASSERT_GE(split.vectors, 0);
  ASSERT_GE(split.tail, 0);
  ASSERT_EQ(split.head + split.vectors * kElementsPerVector + split.tail, n);

  std::vector<int> visits(static_cast<size_t>(n), 0);
  for (int64_t j = 0; j < split.scalar_count(); ++j) {
    const int64_t i = split.scalar_index(j);
    ASSERT_GE(i, 0);
    ASSERT_LT(i, n);
    ++visits[static_cast<size_t>(i)];
  }
  for (int64_t v = 0; v < split.vectors; ++v) {
    const int64_t first = split.vector_first(v);
    ASSERT_EQ((in + static_cast<uintptr_t>(first * layout.in_bytes)) % kVectorBytes, 0u) << "vector " << v;
    ASSERT_EQ((out + static_cast<uintptr_t>(first * layout.out_bytes)) % kVectorBytes, 0u) << "vector " << v;
    for (int64_t k = 0; k < kElementsPerVector; ++k) {
      ASSERT_LT(first + k, n);
      ++visits[static_cast<size_t>(first + k)];
    }
  }
  for (int64_t i = 0; i < n; ++i) ASSERT_EQ(visits[static_cast<size_t>(i)], 1) << "element " << i;

  // The vector body is as long as it can be: it starts at the first common aligned element and
  // leaves less than one vector step to the tail.
  const int64_t start = brute_force_common_start(in, layout.in_bytes, out, layout.out_bytes);
  if (start >= 0 && start < n) {
    EXPECT_EQ(split.head, start);
    EXPECT_LT(split.tail, kElementsPerVector);
  } else {
    EXPECT_EQ(split.head, n);
    EXPECT_EQ(split.vectors, 0);
  }
}

std::vector<int64_t> element_counts() {
  std::vector<int64_t> counts;
  for (int64_t n = 0; n <= 48; ++n) counts.push_back(n);
  for (const int64_t n : {63, 64, 65, 127, 128, 129, 1000, 4097}) counts.push_back(n);
  return counts;
}

// Every placement of each buffer within a 16-byte line, on element boundaries, at a low and a high base.
TEST(CastLaunch, SplitCoversEveryElementOnceForEveryPlacement) {
  for (const Layout layout : {kNarrowing, kWidening}) {
    for (const uintptr_t base : {uintptr_t{0x10000}, uintptr_t{0x7f12'3456'7000}}) {
      for (int in_phase = 0; in_phase < 16; in_phase += layout.in_bytes) {
        for (int out_phase = 0; out_phase < 16; out_phase += layout.out_bytes) {
          const uintptr_t in = base + static_cast<uintptr_t>(in_phase);
          const uintptr_t out = base + 0x100000 + static_cast<uintptr_t>(out_phase);
          for (const int64_t n : element_counts()) check_split(n, in, out, layout);
        }
      }
    }
  }
}

TEST(CastLaunch, LargeCountsKeepTheBodyAndUseSixtyFourBitIndices) {
  // Both placements are three elements short of a common 16-byte boundary.
  check_split((int64_t{1} << 20) | 3, 0x10004, 0x2000A, kNarrowing);
  check_split((int64_t{1} << 20) | 3, 0x1000A, 0x20004, kWidening);
  // More elements than a 32-bit index can reach: only the arithmetic is checked, nothing is visited.
  const int64_t n = (int64_t{1} << 33) + 13;
  const Split split = split_cast(n, 0x10004, 4, 0x2000A, 2);
  EXPECT_EQ(split.head, 3);
  EXPECT_EQ(split.vectors, (n - 3) / 8);
  EXPECT_EQ(split.head + split.vectors * kElementsPerVector + split.tail, n);
  EXPECT_EQ(split.scalar_index(split.scalar_count() - 1), n - 1);
  EXPECT_EQ(split.vector_first(split.vectors - 1) + kElementsPerVector, split.body_end());
}

TEST(CastLaunch, IncompatiblePhasesFallBackToScalar) {
  // fp32 one element past a 16-byte line, bf16 on one: element h is aligned on the fp32 side only when
  // h % 4 == 3, and on the bf16 side only when h % 8 == 0. Never both.
  const Split split = split_cast(1000, 0x10004, 4, 0x20000, 2);
  EXPECT_EQ(split.head, 1000);
  EXPECT_EQ(split.vectors, 0);
  EXPECT_EQ(split.tail, 0);
  EXPECT_EQ(split.scalar_index(999), 999);
}

TEST(CastLaunch, PointersNotAlignedToTheirElementNeverVectorize) {
  EXPECT_FALSE(naturally_aligned(0x10001, 4));
  EXPECT_FALSE(naturally_aligned(0x10002, 4));
  EXPECT_FALSE(naturally_aligned(0x10001, 2));
  EXPECT_TRUE(naturally_aligned(0x10002, 2));
  EXPECT_EQ(common_vector_start(0x10001, 4, 0x20000, 2), -1);
  EXPECT_EQ(split_cast(64, 0x10001, 4, 0x20000, 2).vectors, 0);
}

TEST(CastLaunch, GridIsOneWaveAtMostAndEnoughThreadsBelowThat) {
  constexpr int kSmCount = 132;
  for (const int64_t n : {int64_t{1}, int64_t{7}, int64_t{8}, int64_t{2048}, int64_t{1} << 20, int64_t{1} << 26,
                          (int64_t{1} << 33) + 5}) {
    SCOPED_TRACE("n=" + std::to_string(n));
    for (const Split split : {split_cast(n, 0x10000, 4, 0x20000, 2), split_cast(n, 0x10004, 4, 0x20000, 2)}) {
      const int blocks = grid_blocks(split, kSmCount);
      EXPECT_GE(blocks, 1);
      EXPECT_LE(blocks, kSmCount * kBlocksPerSm);
      const int64_t threads = static_cast<int64_t>(blocks) * kThreadsPerBlock;
      const int64_t work_items = std::max(split.vectors, split.scalar_count());
      if (blocks < kSmCount * kBlocksPerSm) {
        EXPECT_GE(threads, work_items);
      }
      EXPECT_LT(threads - kThreadsPerBlock, std::max<int64_t>(work_items, 1));  // no idle block
    }
  }
  EXPECT_EQ(grid_blocks(split_cast(1 << 20, 0x10000, 4, 0x20000, 2), 0), kBlocksPerSm);  // unknown SM count
}

}  // namespace
}  // namespace gauge::optimized::precision::cast_launch
