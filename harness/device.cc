#include "harness/device.h"

#include <unistd.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cstdio>
#include <fstream>
#include <thread>

namespace gauge {

namespace {

struct PeakRow {
  const char* entry;
  int cc_major, cc_minor;
  const char* name_contains;  // matched against the CUDA device name
  int sm_count;
  double f64, f32, tf32, f16, bf16, fp8;  // dense TFLOP/s; 0 = not supported / not published
  double hbm_gbps;
};

// Dense (no 2:4 sparsity) peaks at boost clock from the vendors' datasheets. Tensor-core rates for
// tf32/f16/bf16/fp8 with fp32 accumulation; f32 and f64 are the FMA rates (f64 tensor on A100/H100).
// A row matches only on compute capability + name + SM count, so a cut-down part is never taken
// for its big sibling.
constexpr std::array<PeakRow, 13> kPeakTable{{
    {"A100 SXM4 80GB", 8, 0, "A100-SXM4-80GB", 108, 19.5, 19.5, 156, 312, 312, 0, 2039},
    {"A100 SXM4 40GB", 8, 0, "A100-SXM4-40GB", 108, 19.5, 19.5, 156, 312, 312, 0, 1555},
    {"A100 PCIe 80GB", 8, 0, "A100 80GB PCIe", 108, 19.5, 19.5, 156, 312, 312, 0, 1935},
    {"A100 PCIe 40GB", 8, 0, "A100-PCIE-40GB", 108, 19.5, 19.5, 156, 312, 312, 0, 1555},
    {"H100 SXM5", 9, 0, "H100 80GB HBM3", 132, 67, 67, 494.7, 989.4, 989.4, 1978.9, 3350},
    {"H100 PCIe", 9, 0, "H100 PCIe", 114, 51, 51, 378, 756, 756, 1513, 2000},
    {"H100 NVL", 9, 0, "H100 NVL", 132, 60, 60, 417.5, 835.5, 835.5, 1670.5, 3900},
    {"H200 SXM", 9, 0, "H200", 132, 67, 67, 494.7, 989.4, 989.4, 1978.9, 4800},
    {"H200 NVL", 9, 0, "H200 NVL", 132, 60, 60, 417.5, 835.5, 835.5, 1670.5, 4800},
    {"B200 (HGX, 1000 W)", 10, 0, "B200", 148, 40, 80, 1100, 2250, 2250, 4500, 8000},
    {"L40S", 8, 9, "L40S", 142, 1.4, 91.6, 183, 362.05, 362.05, 733, 864},
    {"L4", 8, 9, "L4", 58, 0.49, 30.3, 60, 121, 121, 242.5, 300},
    // GeForce: tensor rates with fp32 accumulation are half those with fp16 accumulation.
    {"GeForce RTX 4090", 8, 9, "RTX 4090", 128, 1.29, 82.6, 82.6, 165.2, 165.2, 330.3, 1008},
}};

bool name_matches(const std::string& device_name, const char* fragment) {
  if (device_name.find(fragment) == std::string::npos) return false;
  // "H200" must not claim an "H200 NVL"; "L4" must not claim an "L40S".
  const std::string f(fragment);
  const size_t at = device_name.find(f);
  const size_t after = at + f.size();
  if (after < device_name.size()) {
    const std::string rest = device_name.substr(after);
    if (f == "H200" && rest.find("NVL") != std::string::npos) return false;
    if (std::isalnum(static_cast<unsigned char>(device_name[after]))) return false;
  }
  return true;
}

std::string run_command(const std::string& command) {
  std::string output;
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) return output;
  std::array<char, 256> buffer{};
  while (fgets(buffer.data(), static_cast<int>(buffer.size()), pipe) != nullptr) output += buffer.data();
  pclose(pipe);
  while (!output.empty() && std::isspace(static_cast<unsigned char>(output.back()))) output.pop_back();
  return output;
}

}  // namespace

std::optional<GpuPeaks> lookup_gpu_peaks(const std::string& name, int cc_major, int cc_minor, int sm_count) {
  for (const PeakRow& row : kPeakTable) {
    if (row.cc_major != cc_major || row.cc_minor != cc_minor || row.sm_count != sm_count) continue;
    if (!name_matches(name, row.name_contains)) continue;
    GpuPeaks peaks;
    peaks.table_entry = row.entry;
    peaks.source = "vendor datasheet, dense, boost clock";
    auto put = [&](DType t, double v) {
      if (v > 0) peaks.tflops[t] = v;
    };
    put(DType::f64, row.f64);
    put(DType::f32, row.f32);
    put(DType::tf32, row.tf32);
    put(DType::f16, row.f16);
    put(DType::bf16, row.bf16);
    put(DType::e4m3, row.fp8);
    put(DType::e5m2, row.fp8);
    peaks.hbm_gbps = row.hbm_gbps;
    return peaks;
  }
  return std::nullopt;
}

std::vector<std::string> gpu_peak_table_rows() {
  std::vector<std::string> rows;
  for (const PeakRow& row : kPeakTable) rows.emplace_back(row.entry);
  return rows;
}

CpuInfo probe_cpu() {
  CpuInfo info;
  info.logical_cores = static_cast<int>(std::thread::hardware_concurrency());
  std::ifstream cpuinfo("/proc/cpuinfo");
  std::string line;
  while (std::getline(cpuinfo, line)) {
    if (line.rfind("model name", 0) == 0) {
      const size_t colon = line.find(':');
      if (colon != std::string::npos) info.model = line.substr(line.find_first_not_of(" \t", colon + 1));
      break;
    }
  }
  if (info.model.empty()) info.model = "unknown";
  return info;
}

MachineInfo probe_machine(const PeakOverrides& overrides) {
  MachineInfo m;
  char host[256] = {};
  gethostname(host, sizeof host - 1);
  m.host = host[0] ? host : "unknown-host";
  m.cpu = probe_cpu();
  m.gauge_version = GAUGE_VERSION;
  m.git_commit = run_command("git -C '" GAUGE_SOURCE_DIR "' rev-parse --short=12 HEAD 2>/dev/null");
  if (m.git_commit.empty()) m.git_commit = "unknown";
  if (!run_command("git -C '" GAUGE_SOURCE_DIR "' status --porcelain --untracked-files=no 2>/dev/null").empty()) {
    m.git_commit += "-dirty";
  }
  m.compiler = std::string("g++ ") + __VERSION__;
  m.build_type = GAUGE_BUILD_TYPE;
  m.built_with_cuda = GAUGE_HAS_CUDA;
  m.gpu_unavailable_reason = gpu::unavailable_reason();
  if (m.gpu_unavailable_reason.empty()) {
    m.gpu = gpu::device_info();
    m.gpu_peaks = lookup_gpu_peaks(m.gpu->name, m.gpu->cc_major, m.gpu->cc_minor, m.gpu->sm_count);
  }
  if (overrides.tflops || overrides.gbps) {
    GpuPeaks peaks = m.gpu_peaks.value_or(GpuPeaks{});
    if (overrides.tflops) {
      for (DType t : {DType::f64, DType::f32, DType::tf32, DType::f16, DType::bf16, DType::e4m3, DType::e5m2}) {
        peaks.tflops[t] = *overrides.tflops;
      }
    }
    if (overrides.gbps) peaks.hbm_gbps = *overrides.gbps;
    peaks.table_entry = peaks.table_entry.empty() ? "user override" : peaks.table_entry + " + user override";
    peaks.source = "--peak-tflops / --peak-gbps";
    m.gpu_peaks = peaks;
  }
  return m;
}

std::optional<double> peak_tflops(const MachineInfo& machine, DType dtype) {
  if (!machine.gpu_peaks) return std::nullopt;
  const auto it = machine.gpu_peaks->tflops.find(dtype);
  if (it == machine.gpu_peaks->tflops.end()) return std::nullopt;
  return it->second;
}

std::optional<double> peak_gbps(const MachineInfo& machine) {
  if (!machine.gpu_peaks || machine.gpu_peaks->hbm_gbps <= 0) return std::nullopt;
  return machine.gpu_peaks->hbm_gbps;
}

std::string device_slug(const MachineInfo& machine) {
  if (!machine.gpu) return "cpu";
  std::string slug;
  for (char c : machine.gpu->name) {
    if (std::isalnum(static_cast<unsigned char>(c))) {
      slug += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    } else if (!slug.empty() && slug.back() != '-') {
      slug += '-';
    }
  }
  while (!slug.empty() && slug.back() == '-') slug.pop_back();
  return slug.empty() ? "gpu" : slug;
}

}  // namespace gauge
