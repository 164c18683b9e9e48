#include "harness/results.h"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>
#include <string>

#include "harness/error.h"

namespace gauge {
namespace {

namespace fs = std::filesystem;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

// A fresh directory per test, removed afterwards.
class TempDir {
 public:
  TempDir() {
    std::string pattern = (fs::temp_directory_path() / "gauge-results-test-XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = pattern;
  }
  ~TempDir() {
    std::error_code ignored;
    fs::remove_all(path_, ignored);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  std::string file(const std::string& name) const { return (path_ / name).string(); }
  const fs::path& path() const { return path_; }
  std::vector<std::string> entries() const {
    std::vector<std::string> names;
    for (const auto& entry : fs::directory_iterator(path_)) names.push_back(entry.path().filename().string());
    std::sort(names.begin(), names.end());
    return names;
  }

 private:
  fs::path path_;
};

void write_text(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
}

// Every field set to something other than its default, non-finite values included, so that a field
// the writer or the reader forgets shows up as a difference.
Record full_record() {
  Record r;
  r.suite = "precision";
  r.case_name = "cast_f32_to_bf16";
  r.shape = "m=3,n=2,k=1";
  r.dims = {{"m", 3}, {"n", 2}, {"k", int64_t{1} << 40}};  // not alphabetical: the order must survive
  r.dtype = "bf16";
  r.impl = "optimized";
  r.device = "cuda:1";
  r.status = RecordStatus::ok;
  r.note = "a note with \"quotes\" and unicode: µs";

  Agreement a;
  a.output = "y";
  a.rule.kind = ToleranceRule::Kind::faithful;
  a.rule.max_ulps = 3;
  a.rule.atol = 1e-300;
  a.rule.rtol = 0.0078125;
  a.rule.factor = 2.5;
  a.rule.derivation = "gamma_64(u_f32) + u_bf16";
  a.elements = 6;
  a.max_abs_error = kInf;
  a.max_rel_error = kNaN;
  a.mean_abs_error = 0.1;
  a.rms_error = 0.2;
  a.max_ulp_distance = kInf;
  a.violations = 0;
  a.nonfinite_mismatches = 7;
  a.signed_zero_mismatches = 8;
  a.faithful_max_abs_error = 0.3;
  a.faithful_rms_error = 0.4;
  a.worst.push_back({.flat_index = 5,
                     .coordinates = "[2, 1]",
                     .actual = kNaN,
                     .expected = -kInf,
                     .actual_bits = 0x7fc0,
                     .expected_bits = 0xff80,
                     .abs_error = kInf,
                     .excess = -0.0});
  a.worst.push_back({.flat_index = 0,
                     .coordinates = "[0, 0]",
                     .actual = 1.5,
                     .expected = 1.25,
                     .actual_bits = 0xffffffffffffffff,
                     .expected_bits = 0,
                     .abs_error = 0.25,
                     .excess = 0.125});
  r.agreement.push_back(a);
  Agreement failing = a;
  failing.output = "scale";
  failing.violations = 2;
  failing.shape_error = "shape [2] vs [3]";
  r.agreement.push_back(failing);

  TimingStats t;
  t.clock = "cuda_events";
  t.cold_cache = true;
  t.iterations_per_repetition = 1000;
  t.repetition_seconds = {1.5e-6, 1.25e-6, 0.1 + 0.2};
  t.median_seconds = 1.5e-6;
  t.min_seconds = 1.25e-6;
  t.mean_seconds = 0.1;
  t.stddev_seconds = 0.17;
  t.cv = 1.7;
  r.timing = t;

  r.throughput = Throughput{.flops = 1e12,
                            .bytes = 3e9,
                            .bound = "compute",
                            .tflops_per_s = 500.5,
                            .gbytes_per_s = 1500.25,
                            .peak = 989.4,
                            .fraction_of_peak = 0.505};
  r.memory = MemoryUse{.measured_peak_bytes = 1024,
                       .predicted_peak_bytes = 2048,
                       .pool_reserved_peak_bytes = 4096,
                       .untracked_bytes = -512,
                       .process_max_rss_bytes = int64_t{1} << 33};
  r.counters = {{"forward_evaluations", 528, 528.0}, {"offload_seconds", 0.25, 0.5}};
  return r;
}

// A reference record: no agreement, timing, throughput or memory.
Record bare_record() {
  Record r;
  r.suite = "precision";
  r.case_name = "cast_f32_to_bf16";
  r.shape = "n=1";
  r.dtype = "f32";
  r.impl = "reference";
  r.device = "cpu";
  r.status = RecordStatus::not_implemented;
  return r;
}

// A throughput without a known peak, and memory without the optional counters.
Record record_with_empty_optionals() {
  Record r = bare_record();
  r.status = RecordStatus::ok;
  r.throughput = Throughput{.flops = 0,
                            .bytes = 8,
                            .bound = "memory",
                            .tflops_per_s = 0,
                            .gbytes_per_s = 2,
                            .peak = std::nullopt,
                            .fraction_of_peak = std::nullopt};
  r.memory = MemoryUse{.measured_peak_bytes = 0,
                       .predicted_peak_bytes = 0,
                       .pool_reserved_peak_bytes = std::nullopt,
                       .untracked_bytes = std::nullopt,
                       .process_max_rss_bytes = std::nullopt};
  r.counters = {{"peak_slots", 4, std::nullopt}};  // measured, nothing predicted
  return r;
}

// Equal as stored: NaN matches NaN, and the sign of zero counts.
void expect_same_double(double actual, double expected, const std::string& what) {
  if (std::isnan(expected)) {
    EXPECT_TRUE(std::isnan(actual)) << what << ": " << actual;
  } else {
    EXPECT_EQ(actual, expected) << what;
    EXPECT_EQ(std::signbit(actual), std::signbit(expected)) << what;
  }
}

void expect_same_agreement(const Agreement& actual, const Agreement& expected) {
  EXPECT_EQ(actual.output, expected.output);
  EXPECT_EQ(actual.rule.kind, expected.rule.kind);
  EXPECT_EQ(actual.rule.max_ulps, expected.rule.max_ulps);
  expect_same_double(actual.rule.atol, expected.rule.atol, "atol");
  expect_same_double(actual.rule.rtol, expected.rule.rtol, "rtol");
  expect_same_double(actual.rule.factor, expected.rule.factor, "factor");
  EXPECT_EQ(actual.rule.derivation, expected.rule.derivation);
  EXPECT_EQ(actual.elements, expected.elements);
  expect_same_double(actual.max_abs_error, expected.max_abs_error, "max_abs_error");
  expect_same_double(actual.max_rel_error, expected.max_rel_error, "max_rel_error");
  expect_same_double(actual.mean_abs_error, expected.mean_abs_error, "mean_abs_error");
  expect_same_double(actual.rms_error, expected.rms_error, "rms_error");
  expect_same_double(actual.max_ulp_distance, expected.max_ulp_distance, "max_ulp_distance");
  EXPECT_EQ(actual.violations, expected.violations);
  EXPECT_EQ(actual.nonfinite_mismatches, expected.nonfinite_mismatches);
  EXPECT_EQ(actual.signed_zero_mismatches, expected.signed_zero_mismatches);
  expect_same_double(actual.faithful_max_abs_error, expected.faithful_max_abs_error, "faithful_max_abs_error");
  expect_same_double(actual.faithful_rms_error, expected.faithful_rms_error, "faithful_rms_error");
  EXPECT_EQ(actual.shape_error, expected.shape_error);
  ASSERT_EQ(actual.worst.size(), expected.worst.size());
  for (size_t i = 0; i < expected.worst.size(); ++i) {
    const WorstElement& w = actual.worst[i];
    const WorstElement& e = expected.worst[i];
    EXPECT_EQ(w.flat_index, e.flat_index);
    EXPECT_EQ(w.coordinates, e.coordinates);
    expect_same_double(w.actual, e.actual, "worst.actual");
    expect_same_double(w.expected, e.expected, "worst.expected");
    EXPECT_EQ(w.actual_bits, e.actual_bits);
    EXPECT_EQ(w.expected_bits, e.expected_bits);
    expect_same_double(w.abs_error, e.abs_error, "worst.abs_error");
    expect_same_double(w.excess, e.excess, "worst.excess");
  }
}

void expect_same_record(const Record& actual, const Record& expected) {
  EXPECT_EQ(actual.suite, expected.suite);
  EXPECT_EQ(actual.case_name, expected.case_name);
  EXPECT_EQ(actual.shape, expected.shape);
  EXPECT_EQ(actual.dims, expected.dims);
  EXPECT_EQ(actual.dtype, expected.dtype);
  EXPECT_EQ(actual.impl, expected.impl);
  EXPECT_EQ(actual.device, expected.device);
  EXPECT_EQ(actual.status, expected.status);
  EXPECT_EQ(actual.note, expected.note);
  ASSERT_EQ(actual.agreement.size(), expected.agreement.size());
  for (size_t i = 0; i < expected.agreement.size(); ++i)
    expect_same_agreement(actual.agreement[i], expected.agreement[i]);

  ASSERT_EQ(actual.timing.has_value(), expected.timing.has_value());
  if (expected.timing) {
    const TimingStats& t = *actual.timing;
    const TimingStats& e = *expected.timing;
    EXPECT_EQ(t.clock, e.clock);
    EXPECT_EQ(t.cold_cache, e.cold_cache);
    EXPECT_EQ(t.iterations_per_repetition, e.iterations_per_repetition);
    EXPECT_EQ(t.repetition_seconds, e.repetition_seconds);  // exact: doubles are written with 17 digits
    EXPECT_EQ(t.median_seconds, e.median_seconds);
    EXPECT_EQ(t.min_seconds, e.min_seconds);
    EXPECT_EQ(t.mean_seconds, e.mean_seconds);
    EXPECT_EQ(t.stddev_seconds, e.stddev_seconds);
    EXPECT_EQ(t.cv, e.cv);
  }
  ASSERT_EQ(actual.throughput.has_value(), expected.throughput.has_value());
  if (expected.throughput) {
    const Throughput& t = *actual.throughput;
    const Throughput& e = *expected.throughput;
    EXPECT_EQ(t.flops, e.flops);
    EXPECT_EQ(t.bytes, e.bytes);
    EXPECT_EQ(t.bound, e.bound);
    EXPECT_EQ(t.tflops_per_s, e.tflops_per_s);
    EXPECT_EQ(t.gbytes_per_s, e.gbytes_per_s);
    EXPECT_EQ(t.peak, e.peak);
    EXPECT_EQ(t.fraction_of_peak, e.fraction_of_peak);
  }
  ASSERT_EQ(actual.memory.has_value(), expected.memory.has_value());
  if (expected.memory) {
    EXPECT_EQ(actual.memory->measured_peak_bytes, expected.memory->measured_peak_bytes);
    EXPECT_EQ(actual.memory->predicted_peak_bytes, expected.memory->predicted_peak_bytes);
    EXPECT_EQ(actual.memory->pool_reserved_peak_bytes, expected.memory->pool_reserved_peak_bytes);
    EXPECT_EQ(actual.memory->untracked_bytes, expected.memory->untracked_bytes);
    EXPECT_EQ(actual.memory->process_max_rss_bytes, expected.memory->process_max_rss_bytes);
  }
  ASSERT_EQ(actual.counters.size(), expected.counters.size());
  for (size_t i = 0; i < expected.counters.size(); ++i) {
    EXPECT_EQ(actual.counters[i].name, expected.counters[i].name);
    EXPECT_EQ(actual.counters[i].measured, expected.counters[i].measured);
    EXPECT_EQ(actual.counters[i].predicted, expected.counters[i].predicted);
  }
}

Record round_trip(const Record& r) {
  // Through text, as a file would carry it.
  return record_from_json(nlohmann::ordered_json::parse(to_json(r).dump(2)));
}

MachineInfo gpu_machine() {
  MachineInfo m;
  m.host = "node-7";
  m.cpu = {.model = "AMD EPYC 9654", .logical_cores = 192};
  gpu::DeviceInfo d;
  d.name = "NVIDIA H100 80GB HBM3";
  d.cc_major = 9;
  d.cc_minor = 0;
  d.sm_count = 132;
  d.memory_bytes = int64_t{85} << 30;
  d.l2_bytes = 52428800;
  d.measured_sm_clock_mhz = 1980.5;
  d.driver_version = "13.0";
  d.runtime_version = "13.0";
  d.cublas_version = "13.0.0";
  d.nccl_version = "2.27.3";
  m.gpu = d;
  m.gpu_peaks = GpuPeaks{.table_entry = "H100 SXM5",
                         .tflops = {{DType::bf16, 989.4}, {DType::f32, 66.9}},
                         .hbm_gbps = 3350,
                         .source = "NVIDIA H100 datasheet"};
  m.gauge_version = "0.1.0";
  m.git_commit = "0123456789abcdef";
  m.compiler = "GNU 12.2.0";
  m.build_type = "Release";
  m.built_with_cuda = true;
  return m;
}

MachineInfo cpu_machine() {
  MachineInfo m;
  m.host = "laptop";
  m.cpu = {.model = "unknown", .logical_cores = 2};
  m.gpu_unavailable_reason = "built without CUDA (GAUGE_CUDA=OFF)";
  m.gauge_version = "0.1.0";
  m.build_type = "Debug";
  return m;
}

ResultsFile sample_file() {
  ResultsFile f;
  f.created_utc = "2026-11-23T09:41:00Z";
  f.machine = machine_to_json(gpu_machine());
  Record disagreeing = full_record();
  disagreeing.status = RecordStatus::disagree;
  disagreeing.timing.reset();
  disagreeing.throughput.reset();
  disagreeing.impl = "reference";  // a distinct key
  Record without_device = bare_record();
  without_device.impl = "optimized";
  without_device.device = "none";
  without_device.status = RecordStatus::no_cuda_device;
  without_device.note = "built without CUDA (GAUGE_CUDA=OFF)";
  f.records = {full_record(), bare_record(), record_with_empty_optionals(), disagreeing, without_device};
  return f;
}

// The message of the UsageError `action` throws; fails the test when it throws nothing else.
template <class Action>
std::string usage_error_of(Action action) {
  try {
    action();
  } catch (const UsageError& e) {
    return e.what();
  }
  ADD_FAILURE() << "no UsageError thrown";
  return "";
}

std::string read_results_error(const std::string& path) {
  return usage_error_of([&] { read_results(path); });
}

// ---- Records --------------------------------------------------------------------------------------

TEST(Results, StatusNamesRoundTrip) {
  for (RecordStatus s : {RecordStatus::ok, RecordStatus::disagree, RecordStatus::no_cuda_device, RecordStatus::unsupported_device,
                         RecordStatus::not_implemented, RecordStatus::error}) {
    EXPECT_EQ(parse_status(status_name(s)), s);
  }
  EXPECT_EQ(parse_status("fine"), std::nullopt);
}

TEST(Results, KeyAndAgrees) {
  Record r = full_record();
  EXPECT_EQ(r.key(), "precision/cast_f32_to_bf16/m=3,n=2,k=1/bf16/optimized");
  EXPECT_FALSE(r.agrees());  // the second agreement fails
  r.agreement.pop_back();
  EXPECT_TRUE(r.agrees());
  r.status = RecordStatus::no_cuda_device;
  EXPECT_FALSE(r.agrees());
  EXPECT_TRUE(record_with_empty_optionals().agrees());
}

TEST(Results, FullRecordRoundTrips) {
  const Record original = full_record();
  expect_same_record(round_trip(original), original);
}

TEST(Results, RecordWithoutOptionalPartsRoundTrips) {
  expect_same_record(round_trip(bare_record()), bare_record());
  expect_same_record(round_trip(record_with_empty_optionals()), record_with_empty_optionals());
}

TEST(Results, FilesWithoutCountersStillRead) {
  nlohmann::ordered_json j = to_json(full_record());
  j.erase("counters");
  EXPECT_TRUE(record_from_json(j).counters.empty());
  j["counters"] = nlohmann::ordered_json::array({{{"name", "x"}, {"measured", "many"}, {"predicted", nullptr}}});
  EXPECT_THROW(record_from_json(j), UsageError);
}

TEST(Results, NonFiniteDoublesAreWrittenAsStrings) {
  const nlohmann::ordered_json j = to_json(full_record());
  const auto& agreement = j["agreement"][0];
  EXPECT_EQ(agreement["max_ulp_distance"], "inf");
  EXPECT_EQ(agreement["max_rel_error"], "nan");
  EXPECT_EQ(agreement["worst"][0]["actual"], "nan");
  EXPECT_EQ(agreement["worst"][0]["expected"], "-inf");
  EXPECT_EQ(agreement["worst"][0]["actual_bits"], "0x7fc0");
  EXPECT_EQ(agreement["worst"][1]["actual_bits"], "0xffffffffffffffff");
  EXPECT_EQ(agreement["worst"][1]["expected_bits"], "0x0");
  EXPECT_EQ(j.dump().find("null"), std::string::npos) << "a non-finite double was written as null";
}

TEST(Results, RecordFieldsAreWrittenInDeclaredOrder) {
  const nlohmann::ordered_json j = to_json(full_record());
  std::vector<std::string> keys;
  for (const auto& [key, value] : j.items()) keys.push_back(key);
  EXPECT_EQ(keys, (std::vector<std::string>{"suite", "case", "shape", "dims", "dtype", "impl", "device", "status",
                                            "note", "agreement", "timing", "throughput", "memory",
                                            "counters"}));
}

TEST(Results, DisagreeingRecordWithTimingIsNeverWritten) {
  Record r = full_record();
  r.status = RecordStatus::disagree;
  EXPECT_THROW(to_json(r), RuntimeFailure);
  r.timing.reset();
  EXPECT_THROW(to_json(r), RuntimeFailure);  // the throughput is still there
  r.throughput.reset();
  EXPECT_NO_THROW(to_json(r));
}

TEST(Results, RecordFromJsonNamesTheBadField) {
  nlohmann::ordered_json j = to_json(full_record());
  {
    nlohmann::ordered_json bad = j;
    bad.erase("status");
    EXPECT_EQ(usage_error_of([&] { record_from_json(bad); }), "missing field 'status'");
  }
  {
    nlohmann::ordered_json bad = j;
    bad["status"] = "fine";
    EXPECT_EQ(usage_error_of([&] { record_from_json(bad); }),
              "field 'status': 'fine' is not one of ok|disagree|no_cuda_device|not_implemented|unsupported_device|error");
  }
  {
    nlohmann::ordered_json bad = j;
    bad["agreement"][1]["rule"]["atol"] = true;
    EXPECT_EQ(usage_error_of([&] { record_from_json(bad); }),
              "field 'agreement[1].rule.atol': expected a number or one of \"nan\", \"inf\", \"-inf\"");
  }
  {
    nlohmann::ordered_json bad = j;
    bad["agreement"][0]["worst"][1]["actual_bits"] = "7fc0";
    EXPECT_NE(usage_error_of([&] { record_from_json(bad); }).find("'agreement[0].worst[1].actual_bits'"),
              std::string::npos);
  }
  {
    nlohmann::ordered_json bad = j;
    bad["dims"]["n"] = 2.5;
    EXPECT_EQ(usage_error_of([&] { record_from_json(bad); }), "field 'dims.n': expected an integer");
  }
  {
    nlohmann::ordered_json bad = j;
    bad["status"] = "disagree";
    EXPECT_NE(usage_error_of([&] { record_from_json(bad); }).find("'timing'"), std::string::npos);
  }
  {
    nlohmann::ordered_json bad = j;
    bad["agreement"][0]["pass"] = false;  // violations is 0
    EXPECT_NE(usage_error_of([&] { record_from_json(bad); }).find("'agreement[0].pass'"), std::string::npos);
  }
}

TEST(Results, ToleranceRuleRoundTripsAndIgnoresExtraFields) {
  const ToleranceRule rule = full_record().agreement[0].rule;
  nlohmann::ordered_json j = to_json(rule);
  j["text"] = "a description added by a manifest";
  const ToleranceRule reread = tolerance_rule_from_json(j);
  EXPECT_EQ(reread.kind, rule.kind);
  EXPECT_EQ(reread.max_ulps, rule.max_ulps);
  EXPECT_EQ(reread.atol, rule.atol);
  EXPECT_EQ(reread.rtol, rule.rtol);
  EXPECT_EQ(reread.factor, rule.factor);
  EXPECT_EQ(reread.derivation, rule.derivation);

  j.erase("factor");
  EXPECT_EQ(usage_error_of([&] { tolerance_rule_from_json(j); }), "tolerance rule: missing field 'factor'");
  EXPECT_EQ(usage_error_of([&] { tolerance_rule_from_json(nlohmann::ordered_json::array()); }),
            "tolerance rule: expected a JSON object");
}

// ---- Files ----------------------------------------------------------------------------------------

TEST(Results, FileRoundTripsThroughDisk) {
  TempDir dir;
  const std::string path = dir.file("results.json");
  const ResultsFile original = sample_file();
  write_file_atomic(path, to_json(original).dump(2));
  EXPECT_EQ(dir.entries(), std::vector<std::string>{"results.json"}) << "the temporary file was left behind";

  const ResultsFile reread = read_results(path);
  EXPECT_EQ(reread.schema_version, kResultsSchemaVersion);
  EXPECT_EQ(reread.created_utc, original.created_utc);
  EXPECT_EQ(reread.machine, original.machine);
  EXPECT_EQ(reread.machine["gpu"]["cc"], "9.0");
  EXPECT_EQ(reread.machine["gpu_peaks"]["tflops"]["bf16"], 989.4);
  ASSERT_EQ(reread.records.size(), original.records.size());
  for (size_t i = 0; i < original.records.size(); ++i) expect_same_record(reread.records[i], original.records[i]);
}

TEST(Results, WriteReplacesAnExistingFile) {
  TempDir dir;
  const std::string path = dir.file("out.json");
  write_file_atomic(path, "first, and longer than the second");
  write_file_atomic(path, "second");
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  EXPECT_EQ(text.str(), "second");
}

TEST(Results, MachineWithoutGpuIsWrittenWithNulls) {
  const nlohmann::ordered_json j = machine_to_json(cpu_machine());
  EXPECT_TRUE(j["gpu"].is_null());
  EXPECT_TRUE(j["gpu_peaks"].is_null());
  EXPECT_EQ(j["gpu_unavailable_reason"], "built without CUDA (GAUGE_CUDA=OFF)");
}

TEST(Results, ReadErrorsAreOneLineAndNameTheFile) {
  TempDir dir;
  const std::string missing = dir.file("missing.json");
  const std::string malformed = dir.file("malformed.json");
  const std::string future = dir.file("future.json");
  const std::string unversioned = dir.file("unversioned.json");
  const std::string no_status = dir.file("no_status.json");
  const std::string array = dir.file("array.json");

  write_text(malformed, "{\"schema_version\": 1,\n\"records\": [\n");
  nlohmann::ordered_json doc = to_json(sample_file());
  doc["schema_version"] = 7;
  write_text(future, doc.dump(2));
  doc.erase("schema_version");
  write_text(unversioned, doc.dump(2));
  doc = to_json(sample_file());
  doc["records"][1].erase("status");
  write_text(no_status, doc.dump(2));
  write_text(array, "[1, 2]");

  const std::vector<std::pair<std::string, std::string>> cases = {
      {missing, "results file '" + missing + "': cannot open: No such file or directory"},
      {malformed, "results file '" + malformed + "': not valid JSON: "},
      {future, "results file '" + future + "': schema_version 7 is not supported (expected 1)"},
      {unversioned, "results file '" + unversioned + "': missing field 'schema_version'"},
      {no_status, "results file '" + no_status + "': record 1: missing field 'status'"},
      {array, "results file '" + array + "': the top level is not a JSON object"},
      {dir.path().string(), "results file '" + dir.path().string() + "': cannot read: Is a directory"},
  };
  for (const auto& [path, expected] : cases) {
    const std::string message = read_results_error(path);
    EXPECT_EQ(message.find('\n'), std::string::npos) << message;
    if (path == malformed) {
      EXPECT_EQ(message.rfind(expected, 0), 0u) << message;  // then nlohmann's position and reason
      EXPECT_NE(message.find("line 3"), std::string::npos) << message;
    } else {
      EXPECT_EQ(message, expected);
    }
  }
}

TEST(Results, WriteIntoMissingDirectoryThrowsAndLeavesNothing) {
  TempDir dir;
  const std::string path = dir.file("absent/results.json");
  const std::string message = usage_error_of([&] { write_file_atomic(path, "{}"); });
  EXPECT_EQ(message, "cannot write '" + path + "': No such file or directory");
  EXPECT_TRUE(dir.entries().empty());
}

TEST(Results, WriteOntoADirectoryThrowsAndRemovesTheTemporaryFile) {
  TempDir dir;
  fs::create_directory(dir.path() / "results.json");
  const std::string path = dir.file("results.json");
  const std::string message = usage_error_of([&] { write_file_atomic(path, "{}"); });
  EXPECT_EQ(message, "cannot write '" + path + "': Is a directory");
  EXPECT_EQ(dir.entries(), std::vector<std::string>{"results.json"});
}

TEST(Results, CheckWritable) {
  TempDir dir;
  EXPECT_NO_THROW(check_writable(dir.file("new.json")));
  EXPECT_TRUE(dir.entries().empty()) << "check_writable left a file behind";

  const std::string on_directory = usage_error_of([&] { check_writable(dir.path().string()); });
  EXPECT_EQ(on_directory, "cannot write '" + dir.path().string() + "': it is a directory");
  const std::string with_slash = dir.path().string() + "/";
  EXPECT_EQ(usage_error_of([&] { check_writable(with_slash); }),
            "cannot write '" + with_slash + "': the path names a directory");
  const std::string in_missing = dir.file("absent/new.json");
  EXPECT_EQ(usage_error_of([&] { check_writable(in_missing); }),
            "cannot write '" + in_missing + "': directory '" + dir.file("absent") + "' does not exist");
  EXPECT_TRUE(dir.entries().empty());
}

TEST(Results, UtcTimestamps) {
  const std::string now = utc_now_iso8601();
  ASSERT_EQ(now.size(), 20u) << now;
  EXPECT_EQ(now[4], '-');
  EXPECT_EQ(now[10], 'T');
  EXPECT_EQ(now[19], 'Z');
  const std::string date = utc_date();
  EXPECT_EQ(date.size(), 10u);
  EXPECT_EQ(now.substr(0, 4), date.substr(0, 4));  // the year; the day may roll over in between
}

// ---- Schema ---------------------------------------------------------------------------------------

const std::string kSchemaPath = std::string(GAUGE_SOURCE_DIR) + "/results/schema.json";

// Runs Python's jsonschema (draft 2020-12) on `document`; returns its exit status and output.
std::pair<int, std::string> validate_with_python(const TempDir& dir, const std::string& document) {
  const std::string document_path = dir.file("document.json");
  const std::string log_path = dir.file("validate.log");
  write_text(document_path, document);
  const std::string command =
      "/usr/bin/python3 -c 'import json, sys, jsonschema\n"
      "schema = json.load(open(sys.argv[1]))\n"
      "jsonschema.Draft202012Validator.check_schema(schema)\n"
      "jsonschema.Draft202012Validator(schema).validate(json.load(open(sys.argv[2])))' '" +
      kSchemaPath + "' '" + document_path + "' > '" + log_path + "' 2>&1";
  const int status = std::system(command.c_str());
  std::ifstream log(log_path);
  std::stringstream output;
  output << log.rdbuf();
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, output.str()};
}

bool python_jsonschema_available() {
  return std::system("/usr/bin/python3 -c 'import jsonschema' > /dev/null 2>&1") == 0;
}

TEST(ResultsSchema, VersionMatchesTheCode) {
  std::ifstream in(kSchemaPath);
  ASSERT_TRUE(in) << kSchemaPath;
  const nlohmann::json schema = nlohmann::json::parse(in);
  EXPECT_EQ(schema["version"], kResultsSchemaVersion);
  EXPECT_EQ(schema["properties"]["schema_version"]["const"], kResultsSchemaVersion);
  EXPECT_EQ(schema["$schema"], "https://json-schema.org/draft/2020-12/schema");
}

TEST(ResultsSchema, WrittenFileValidates) {
  if (!python_jsonschema_available()) {
    GTEST_SKIP() << "/usr/bin/python3 cannot import jsonschema (scripts/setup installs python3-jsonschema)";
  }
  TempDir dir;
  ResultsFile file = sample_file();
  file.created_utc = utc_now_iso8601();
  const auto [status, output] = validate_with_python(dir, to_json(file).dump(2));
  EXPECT_EQ(status, 0) << output;

  ResultsFile cpu_only = file;
  cpu_only.machine = machine_to_json(cpu_machine());
  const auto [cpu_status, cpu_output] = validate_with_python(dir, to_json(cpu_only).dump(2));
  EXPECT_EQ(cpu_status, 0) << cpu_output;
}

TEST(ResultsSchema, RejectsSpeedWithoutAgreementAndUnknownFields) {
  if (!python_jsonschema_available()) {
    GTEST_SKIP() << "/usr/bin/python3 cannot import jsonschema (scripts/setup installs python3-jsonschema)";
  }
  TempDir dir;
  const nlohmann::ordered_json valid = to_json(sample_file());
  ASSERT_EQ(validate_with_python(dir, valid.dump()).first, 0);

  nlohmann::ordered_json timed_disagreement = valid;
  timed_disagreement["records"][0]["status"] = "disagree";  // record 0 has timing and throughput
  EXPECT_NE(validate_with_python(dir, timed_disagreement.dump()).first, 0);

  nlohmann::ordered_json extra_field = valid;
  extra_field["records"][1]["speedup"] = 2;
  EXPECT_NE(validate_with_python(dir, extra_field.dump()).first, 0);

  nlohmann::ordered_json null_for_nan = valid;
  null_for_nan["records"][0]["agreement"][0]["max_ulp_distance"] = nullptr;
  EXPECT_NE(validate_with_python(dir, null_for_nan.dump()).first, 0);
}

}  // namespace
}  // namespace gauge
