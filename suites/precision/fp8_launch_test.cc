// The launch arithmetic of the fp8 / tf32 / stochastic-rounding / scaling kernels, checked on the CPU:
// for every element count, every placement of the two buffers and every vector width and index
// multiple the kernels use, the scalar head, the vector body and the scalar tail cover [0, n) exactly
// once; every vector step is 16-byte aligned on both sides and starts at an index that is a multiple
// of `index_multiple`; and the body is as long as it can be.
#include "optimized/precision/fp8_launch.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

namespace gauge::optimized::precision::fp8_launch {
namespace {

static_assert(split(100, 0x1000, 4, 0x2000, 1, 16).vectors == 6);
static_assert(split(100, 0x1000, 4, 0x2000, 1, 16).tail == 4);
static_assert(split(100, 0x1004, 4, 0x2001, 1, 16, 4).head == 100);  // index 3 aligns both, not a multiple of 4
static_assert(grid_blocks(split(0, 0x1000, 4, 0x2000, 1, 16), 132) == 1);

struct Layout {
  int in_bytes;
  int out_bytes;
  int64_t elements_per_vector;
  int64_t index_multiple;
};
// fp32 -> fp8, fp8 -> fp32, fp32 -> tf32, stochastic fp32 -> fp16, stochastic fp32 -> fp8.
constexpr Layout kLayouts[] = {{4, 1, 16, 1}, {1, 4, 16, 1}, {4, 4, 8, 1}, {4, 2, 8, 4}, {4, 1, 16, 4}};

int64_t brute_force_start(uintptr_t in, const Layout& l, uintptr_t out) {
  for (int64_t h = 0; h < 1024; ++h) {
    if (h % l.index_multiple == 0 && (in + static_cast<uintptr_t>(h * l.in_bytes)) % 16 == 0 &&
        (out + static_cast<uintptr_t>(h * l.out_bytes)) % 16 == 0) {
      return h;
    }
  }
  return -1;
}

void check_split(int64_t n, uintptr_t in, uintptr_t out, const Layout& l) {
  SCOPED_TRACE("n=" + std::to_string(n) + " in=" + std::to_string(in) + " out=" + std::to_string(out) + " bytes " +
               std::to_string(l.in_bytes) + "->" + std::to_string(l.out_bytes) + " vector " +
               std::to_string(l.elements_per_vector) + " multiple " + std::to_string(l.index_multiple));
  const Split s = split(n, in, l.in_bytes, out, l.out_bytes, l.elements_per_vector, l.index_multiple);
  ASSERT_EQ(s.head + s.vectors * l.elements_per_vector + s.tail, n);
  std::vector<int> visits(static_cast<size_t>(n), 0);
  for (int64_t j = 0; j < s.scalar_count(); ++j) {
    const int64_t i = s.scalar_index(j);
    ASSERT_GE(i, 0);
    ASSERT_LT(i, n);
    ++visits[static_cast<size_t>(i)];
  }
  for (int64_t v = 0; v < s.vectors; ++v) {
    const int64_t first = s.vector_first(v);
    ASSERT_EQ((in + static_cast<uintptr_t>(first * l.in_bytes)) % 16, 0u);
    ASSERT_EQ((out + static_cast<uintptr_t>(first * l.out_bytes)) % 16, 0u);
    ASSERT_EQ(first % l.index_multiple, 0);
    for (int64_t k = 0; k < l.elements_per_vector; ++k) ++visits[static_cast<size_t>(first + k)];
  }
  for (int64_t i = 0; i < n; ++i) ASSERT_EQ(visits[static_cast<size_t>(i)], 1) << "element " << i;
  const int64_t start = brute_force_start(in, l, out);
  if (start >= 0 && start < n) {
    EXPECT_EQ(s.head, start);
    EXPECT_LT(s.tail, l.elements_per_vector);
  } else {
    EXPECT_EQ(s.vectors, 0);
  }
}

TEST(Fp8Launch, SplitCoversEveryElementOnceForEveryPlacement) {
  std::vector<int64_t> counts;
  for (int64_t n = 0; n <= 70; ++n) counts.push_back(n);
  for (const int64_t n : {127, 128, 129, 1000, 4099}) counts.push_back(n);
  for (const Layout& l : kLayouts) {
    for (int in_phase = 0; in_phase < 16; in_phase += l.in_bytes) {
      for (int out_phase = 0; out_phase < 16; out_phase += l.out_bytes) {
        const uintptr_t in = 0x10000 + static_cast<uintptr_t>(in_phase);
        const uintptr_t out = 0x7f12'3456'7000 + static_cast<uintptr_t>(out_phase);
        for (const int64_t n : counts) check_split(n, in, out, l);
      }
    }
  }
}

TEST(Fp8Launch, LargeCountsUseSixtyFourBitIndices) {
  const int64_t n = (int64_t{1} << 33) + 18;  // head 13, tail 5
  const Split s = split(n, 0x1000C, 4, 0x20003, 1, 16);
  EXPECT_EQ(s.head, 13);
  EXPECT_EQ(s.head + s.vectors * 16 + s.tail, n);
  EXPECT_EQ(s.scalar_index(s.scalar_count() - 1), n - 1);
}

TEST(Fp8Launch, GridIsOneWaveAtMostAndRespectsTheBlockCap) {
  for (const int64_t n : {int64_t{1}, int64_t{16}, int64_t{1} << 20, int64_t{1} << 26}) {
    const Split s = split(n, 0x10000, 4, 0x20000, 1, 16);
    const int blocks = grid_blocks(s, 132);
    EXPECT_GE(blocks, 1);
    EXPECT_LE(blocks, 132 * kBlocksPerSm);
    EXPECT_LE(grid_blocks(s, 132, 64), 64);
    if (blocks < 132 * kBlocksPerSm) {
      EXPECT_GE(int64_t{blocks} * kThreadsPerBlock, std::max(s.vectors, s.scalar_count()));
    }
  }
}

}  // namespace
}  // namespace gauge::optimized::precision::fp8_launch
