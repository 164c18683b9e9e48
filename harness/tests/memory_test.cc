#include <gtest/gtest.h>

#include "harness/memory.h"
#include "harness/tensor.h"

namespace gauge::mem {
namespace {

TEST(CountingAllocator, TracksCurrentAndPeak) {
  const int64_t base = host_current_bytes();
  reset_host_peak();
  {
    HostVector<float> a(1000);
    EXPECT_EQ(host_current_bytes() - base, 4000);
    {
      HostVector<double> b(500);
      EXPECT_EQ(host_current_bytes() - base, 8000);
    }
    EXPECT_EQ(host_current_bytes() - base, 4000);
  }
  EXPECT_EQ(host_current_bytes(), base);
  EXPECT_EQ(host_peak_bytes() - base, 8000);
  reset_host_peak();
  EXPECT_EQ(host_peak_bytes(), base);
}

TEST(CountingAllocator, PeakScopeMeasuresAboveBaseline) {
  HostVector<char> held(1 << 10);
  PeakScope scope;
  { HostTensor t("t", DType::f32, {256, 4}); }
  EXPECT_EQ(scope.peak_above_baseline(), 4096);
}

// A scope opened inside a measurement (a reference timing its own phases) must not hide from the
// enclosing window a peak reached before it opened.
TEST(CountingAllocator, NestedPeakScopeKeepsTheEnclosingPeak) {
  const int64_t base = host_current_bytes();
  PeakScope outer;
  { HostVector<char> big(1 << 20); }  // the outer window's peak: 1 MiB
  {
    PeakScope inner;
    { HostVector<char> small(1 << 10); }
    EXPECT_EQ(inner.peak_above_baseline(), 1 << 10);
  }
  EXPECT_EQ(outer.peak_above_baseline(), 1 << 20);
  {
    PeakScope inner;
    { HostVector<char> bigger(2 << 20); }
  }
  EXPECT_EQ(host_peak_bytes() - base, 2 << 20) << "a larger inner peak is the enclosing window's too";
}

TEST(CountingAllocator, BuffersAreAlignedForVectorLoads) {
  HostVector<float> a(3), b(5);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(a.data()) % 64, 0u);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(b.data()) % 64, 0u);
}

TEST(ProcessRss, IsReported) { EXPECT_GT(process_max_rss_bytes(), 0); }

}  // namespace
}  // namespace gauge::mem
