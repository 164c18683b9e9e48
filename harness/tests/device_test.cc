#include <gtest/gtest.h>

#include "harness/device.h"

namespace gauge {
namespace {

TEST(PeakTable, KnownGpusMatchOnCapabilityNameAndSmCount) {
  const auto h100 = lookup_gpu_peaks("NVIDIA H100 80GB HBM3", 9, 0, 132);
  ASSERT_TRUE(h100.has_value());
  EXPECT_EQ(h100->table_entry, "H100 SXM5");
  EXPECT_DOUBLE_EQ(h100->tflops.at(DType::bf16), 989.4);
  EXPECT_DOUBLE_EQ(h100->hbm_gbps, 3350);

  const auto h200 = lookup_gpu_peaks("NVIDIA H200", 9, 0, 132);
  ASSERT_TRUE(h200.has_value());
  EXPECT_EQ(h200->table_entry, "H200 SXM");
  EXPECT_DOUBLE_EQ(h200->hbm_gbps, 4800);
  EXPECT_EQ(lookup_gpu_peaks("NVIDIA H200 NVL", 9, 0, 132)->table_entry, "H200 NVL");

  EXPECT_EQ(lookup_gpu_peaks("NVIDIA A100-SXM4-80GB", 8, 0, 108)->table_entry, "A100 SXM4 80GB");
  EXPECT_EQ(lookup_gpu_peaks("NVIDIA H100 PCIe", 9, 0, 114)->table_entry, "H100 PCIe");
  EXPECT_EQ(lookup_gpu_peaks("NVIDIA H100 NVL", 9, 0, 132)->table_entry, "H100 NVL");
  EXPECT_EQ(lookup_gpu_peaks("NVIDIA B200", 10, 0, 148)->table_entry, "B200 (HGX, 1000 W)");
  EXPECT_EQ(lookup_gpu_peaks("NVIDIA L40S", 8, 9, 142)->table_entry, "L40S");
  EXPECT_EQ(lookup_gpu_peaks("NVIDIA L4", 8, 9, 58)->table_entry, "L4");
  EXPECT_EQ(lookup_gpu_peaks("NVIDIA GeForce RTX 4090", 8, 9, 128)->table_entry, "GeForce RTX 4090");
}

TEST(PeakTable, UnknownOrMismatchedGpusGetNoGuess) {
  EXPECT_FALSE(lookup_gpu_peaks("NVIDIA GeForce RTX 3060", 8, 6, 28).has_value());
  // Right name, wrong SM count (a cut-down or MIG slice): unknown, not the full part's peak.
  EXPECT_FALSE(lookup_gpu_peaks("NVIDIA H100 80GB HBM3", 9, 0, 66).has_value());
  EXPECT_FALSE(lookup_gpu_peaks("NVIDIA L40S", 8, 9, 58).has_value());
  // A100 has no fp8.
  EXPECT_EQ(lookup_gpu_peaks("NVIDIA A100-SXM4-80GB", 8, 0, 108)->tflops.count(DType::e4m3), 0u);
}

TEST(Machine, ProbeWithoutGpuReportsWhy) {
  const MachineInfo m = probe_machine({});
  EXPECT_FALSE(m.host.empty());
  EXPECT_GT(m.cpu.logical_cores, 0);
  if (!m.gpu) {
    EXPECT_FALSE(m.gpu_unavailable_reason.empty());
    EXPECT_EQ(device_slug(m), "cpu");
    EXPECT_FALSE(peak_gbps(m).has_value());
  }
}

TEST(Machine, OverridesReplaceThePeaks) {
  const MachineInfo m = probe_machine({.tflops = 100.0, .gbps = 1000.0});
  ASSERT_TRUE(m.gpu_peaks.has_value());
  EXPECT_DOUBLE_EQ(*peak_tflops(m, DType::bf16), 100.0);
  EXPECT_DOUBLE_EQ(*peak_gbps(m), 1000.0);
}

}  // namespace
}  // namespace gauge
