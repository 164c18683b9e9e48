// What machine a result came from, and the dense peaks that MFU and %-of-bandwidth are measured against.
#pragma once

#include <map>
#include <optional>
#include <string>

#include "harness/dtype.h"
#include "harness/gpu.h"

namespace gauge {

struct CpuInfo {
  std::string model;
  int logical_cores = 0;
};

struct GpuPeaks {
  std::string table_entry;         // which row of the table matched, e.g. "H100 SXM5"
  std::map<DType, double> tflops;  // dense (no sparsity) tensor-core / FMA peaks per math dtype
  double hbm_gbps = 0;             // 1 GB = 1e9 bytes
  std::string source;              // where the numbers come from
};

// Table lookup by compute capability, name and SM count. nullopt: "peak unknown", never a guess.
std::optional<GpuPeaks> lookup_gpu_peaks(const std::string& name, int cc_major, int cc_minor, int sm_count);
// The names of all table rows, for `gauge info` and the tests.
std::vector<std::string> gpu_peak_table_rows();

struct PeakOverrides {
  std::optional<double> tflops;  // replaces every dtype's peak
  std::optional<double> gbps;
};

struct MachineInfo {
  std::string host;
  CpuInfo cpu;
  std::optional<gpu::DeviceInfo> gpu;
  std::string gpu_unavailable_reason;  // set when gpu is empty
  std::optional<GpuPeaks> gpu_peaks;   // after overrides
  std::string gauge_version;
  std::string git_commit;
  std::string compiler;
  std::string build_type;
  bool built_with_cuda = false;
};

MachineInfo probe_machine(const PeakOverrides& overrides);
CpuInfo probe_cpu();

// Peak FLOP/s (1e12) for `dtype` on this machine's GPU, or nullopt.
std::optional<double> peak_tflops(const MachineInfo& machine, DType dtype);
std::optional<double> peak_gbps(const MachineInfo& machine);

// "nvidia-h100-80gb-hbm3" or "cpu": the device part of a results file name.
std::string device_slug(const MachineInfo& machine);

}  // namespace gauge
