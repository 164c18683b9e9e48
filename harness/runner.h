// Runs declared cases: inputs, the reference, the optimized side, their agreement, then (only when
// they agree) timing, throughput and measured peak memory. The ctest conformance check and
// `gauge run` both go through evaluate_point, so they cannot drift apart.
#pragma once

#include <iosfwd>
#include <memory>
#include <string>
#include <vector>

#include "harness/case.h"
#include "harness/device.h"
#include "harness/inputs.h"
#include "harness/results.h"

namespace gauge {

enum class DeviceSelection { cpu, cuda, all };
std::optional<DeviceSelection> parse_device_selection(std::string_view s);

struct RunOptions {
  std::string suite;
  std::string filter;
  DeviceSelection devices = DeviceSelection::all;
  int repetitions = 5;
  bool quick = false;       // only the points marked quick
  bool cold_cache = false;  // flush L2 before every timed CUDA call
  bool time = true;         // false: agreement only (ctest)
  double min_seconds_per_repetition = 0.05;
  uint64_t seed = inputs::kDefaultSeed;
};

struct PointOutcome {
  Record reference;
  std::optional<Record> optimized;  // absent when the optimized side was not selected
};

class Runner {
 public:
  Runner(MachineInfo machine, RunOptions options);
  ~Runner();

  PointOutcome evaluate_point(const CaseDecl& decl, const Point& point);
  // Every selected point, with one progress line each on `progress`.
  std::vector<Record> run(const std::vector<Selection>& selection, std::ostream& progress);

  const MachineInfo& machine() const { return machine_; }

 private:
  Record run_reference(const CaseDecl& decl, const Point& point, const CostModel& model,
                       const std::vector<HostTensor>& inputs, ReferenceResult& result);
  Record run_optimized(const CaseDecl& decl, const Point& point, const CostModel& model, const std::vector<ToleranceRule>& rules,
                       const std::vector<HostTensor>& inputs, const ReferenceResult& reference);
  gpu::Session& session();

  MachineInfo machine_;
  RunOptions options_;
  std::unique_ptr<gpu::Session> session_;
};

// The results table: case, shape, dtype, impl, agreement, time, TFLOP/s or GB/s, MFU or % of peak
// bandwidth, measured and predicted peak memory.
enum class TableStyle { text, markdown };
void print_table(const std::vector<Record>& records, std::ostream& out, TableStyle style = TableStyle::text);
std::string format_seconds(double seconds);
std::string format_bytes(double bytes);

}  // namespace gauge
