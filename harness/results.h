// Result records and the results file (results/schema.json describes it). One record per
// (case, shape, dtype, implementation).
//
// The JSON is nlohmann::ordered_json so that a written file keeps the declared field order (and a
// record's dims their order) instead of sorting keys. JSON has no NaN or Inf: every double that is
// not finite is written as the string "nan", "inf" or "-inf", and read back from it.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "harness/compare.h"
#include "harness/device.h"
#include "harness/timing.h"

namespace gauge {

inline constexpr int kResultsSchemaVersion = 1;

enum class RecordStatus : uint8_t {
  ok,              // ran; for optimized, agreed with the reference
  disagree,        // optimized output disagreed: no speed is recorded
  no_cuda_device,  // the optimized side could not run here (reason in `note`)
  not_implemented, // the case has no optimized implementation in this build
  unsupported_device,  // the device present cannot run the case (reason in `note`), e.g. fp8 on sm_80
  error,           // an exception while running (message in `note`)
};
std::string_view status_name(RecordStatus s);
std::optional<RecordStatus> parse_status(std::string_view s);

struct Throughput {
  double flops = 0;  // per call, from the case's model
  double bytes = 0;
  std::string bound;  // "memory" or "compute"
  double tflops_per_s = 0;
  double gbytes_per_s = 0;
  std::optional<double> peak;              // TFLOP/s (compute) or GB/s (memory); empty: peak unknown
  std::optional<double> fraction_of_peak;  // MFU or fraction of HBM bandwidth
};

struct MemoryUse {
  int64_t measured_peak_bytes = 0;   // counting allocator (reference) or pool high-water (optimized)
  int64_t predicted_peak_bytes = 0;  // the case's analytic model
  std::optional<int64_t> pool_reserved_peak_bytes;
  std::optional<int64_t> untracked_bytes;
  std::optional<int64_t> process_max_rss_bytes;
};

// A measured quantity other than time and memory (harness/case.h Counter), with the model's prediction.
struct CounterRecord {
  std::string name;
  double measured = 0;
  std::optional<double> predicted;
};

struct Record {
  std::string suite;
  std::string case_name;
  std::string shape;
  std::vector<std::pair<std::string, int64_t>> dims;
  std::string dtype;
  std::string impl;    // "reference" or "optimized"
  std::string device;  // "cpu", "cuda:0", or "none" when it did not run for want of a CUDA device
  RecordStatus status = RecordStatus::ok;
  std::string note;
  std::vector<Agreement> agreement;  // one per output; empty for the reference itself
  std::optional<TimingStats> timing;
  std::optional<Throughput> throughput;
  std::optional<MemoryUse> memory;
  std::vector<CounterRecord> counters;  // optional in files (absent = none)

  std::string key() const;  // suite/case/shape/dtype/impl: what `gauge compare` matches on
  bool agrees() const;
};

struct ResultsFile {
  int schema_version = kResultsSchemaVersion;
  std::string created_utc;  // ISO 8601, "2026-11-23T09:41:00Z"
  nlohmann::ordered_json machine;  // MachineInfo as written
  std::vector<Record> records;
};

nlohmann::ordered_json machine_to_json(const MachineInfo& m);
// Throws RuntimeFailure for a record that breaks "no speed without agreement" (status disagree with
// timing or throughput set): that is a bug in the caller, and such a record must never be written.
nlohmann::ordered_json to_json(const Record& r);
// Throws UsageError naming the bad field, e.g. "field 'agreement[0].rule.kind': expected one of ...".
Record record_from_json(const nlohmann::ordered_json& j);
nlohmann::ordered_json to_json(const ResultsFile& f);
// A tolerance rule as records carry it: {kind, max_ulps, atol, rtol, factor, derivation}. Other fields
// are ignored when reading; a missing or mistyped one is a UsageError naming it.
nlohmann::ordered_json to_json(const ToleranceRule& rule);
ToleranceRule tolerance_rule_from_json(const nlohmann::ordered_json& j);

// Reads and checks a results file (parseable, schema_version matches, required fields present).
// Throws UsageError with one line naming the file and the problem.
ResultsFile read_results(const std::string& path);

// Writes `text` to a temporary file beside `path` and renames it into place, so a crash or a bad
// path never leaves a half-written file. Throws UsageError when the directory is not writable.
void write_file_atomic(const std::string& path, const std::string& text);
// Fails early (UsageError) if `path` could not be written, before any work is done.
void check_writable(const std::string& path);

std::string utc_now_iso8601();
std::string utc_date();  // "2026-11-23"

}  // namespace gauge
