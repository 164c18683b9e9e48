#include "harness/results.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <initializer_list>
#include <limits>
#include <utility>

#include "harness/error.h"

namespace gauge {
namespace {

using Json = nlohmann::ordered_json;

// ---- Writing ------------------------------------------------------------------------------------

// JSON has no NaN or Inf (nlohmann would silently write null), and agreement metrics are non-finite
// exactly when something went wrong, so they must survive the round trip.
Json real_to_json(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  return v;
}

Json optional_real_to_json(const std::optional<double>& v) { return v ? real_to_json(*v) : Json(nullptr); }
Json optional_integer_to_json(const std::optional<int64_t>& v) { return v ? Json(*v) : Json(nullptr); }

std::string bits_to_hex(uint64_t bits) {
  char text[2 + 16 + 1];
  std::snprintf(text, sizeof text, "0x%" PRIx64, bits);
  return text;
}

std::string_view rule_kind_name(ToleranceRule::Kind kind) {
  switch (kind) {
    case ToleranceRule::Kind::ulp: return "ulp";
    case ToleranceRule::Kind::abs_rel: return "abs_rel";
    case ToleranceRule::Kind::faithful: return "faithful";
  }
  return "?";
}

Json worst_to_json(const WorstElement& w) {
  return Json{{"index", w.flat_index},
              {"coordinates", w.coordinates},
              {"actual", real_to_json(w.actual)},
              {"expected", real_to_json(w.expected)},
              {"actual_bits", bits_to_hex(w.actual_bits)},
              {"expected_bits", bits_to_hex(w.expected_bits)},
              {"abs_error", real_to_json(w.abs_error)},
              {"excess", real_to_json(w.excess)}};
}

Json agreement_to_json(const Agreement& a) {
  Json worst = Json::array();
  for (const WorstElement& w : a.worst) worst.push_back(worst_to_json(w));
  return Json{{"output", a.output},
              {"rule", to_json(a.rule)},
              {"elements", a.elements},
              {"max_abs_error", real_to_json(a.max_abs_error)},
              {"max_rel_error", real_to_json(a.max_rel_error)},
              {"mean_abs_error", real_to_json(a.mean_abs_error)},
              {"rms_error", real_to_json(a.rms_error)},
              {"max_ulp_distance", real_to_json(a.max_ulp_distance)},
              {"violations", a.violations},
              {"nonfinite_mismatches", a.nonfinite_mismatches},
              {"signed_zero_mismatches", a.signed_zero_mismatches},
              {"faithful_max_abs_error", real_to_json(a.faithful_max_abs_error)},
              {"faithful_rms_error", real_to_json(a.faithful_rms_error)},
              {"pass", a.pass()},
              {"shape_error", a.shape_error},
              {"worst", std::move(worst)}};
}

Json timing_to_json(const TimingStats& t) {
  Json repetitions = Json::array();
  for (double s : t.repetition_seconds) repetitions.push_back(real_to_json(s));
  return Json{{"clock", t.clock},
              {"cold_cache", t.cold_cache},
              {"iterations_per_repetition", t.iterations_per_repetition},
              {"repetition_seconds", std::move(repetitions)},
              {"median_seconds", real_to_json(t.median_seconds)},
              {"min_seconds", real_to_json(t.min_seconds)},
              {"mean_seconds", real_to_json(t.mean_seconds)},
              {"stddev_seconds", real_to_json(t.stddev_seconds)},
              {"cv", real_to_json(t.cv)}};
}

Json throughput_to_json(const Throughput& t) {
  return Json{{"flops", real_to_json(t.flops)},
              {"bytes", real_to_json(t.bytes)},
              {"bound", t.bound},
              {"tflops_per_s", real_to_json(t.tflops_per_s)},
              {"gbytes_per_s", real_to_json(t.gbytes_per_s)},
              {"peak", optional_real_to_json(t.peak)},
              {"fraction_of_peak", optional_real_to_json(t.fraction_of_peak)}};
}

Json memory_to_json(const MemoryUse& m) {
  return Json{{"measured_peak_bytes", m.measured_peak_bytes},
              {"predicted_peak_bytes", m.predicted_peak_bytes},
              {"pool_reserved_peak_bytes", optional_integer_to_json(m.pool_reserved_peak_bytes)},
              {"untracked_bytes", optional_integer_to_json(m.untracked_bytes)},
              {"process_max_rss_bytes", optional_integer_to_json(m.process_max_rss_bytes)}};
}

// ---- Reading ------------------------------------------------------------------------------------
// Every failure names the field by its path inside the record ("agreement[0].rule.kind"), so that a
// hand-edited or truncated file can be fixed without reading this code.

[[noreturn]] void field_error(const std::string& path, const std::string& problem) {
  throw UsageError("field '" + path + "': " + problem);
}

std::string join_path(const std::string& parent, std::string_view name) {
  return parent.empty() ? std::string(name) : parent + "." + std::string(name);
}

std::string index_path(const std::string& parent, size_t i) { return parent + "[" + std::to_string(i) + "]"; }

std::string read_string(const Json& v, const std::string& path) {
  if (!v.is_string()) field_error(path, "expected a string");
  return v.get<std::string>();
}

int64_t read_integer(const Json& v, const std::string& path) {
  if (!v.is_number_integer()) field_error(path, "expected an integer");
  if (v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
    field_error(path, "integer out of range");
  }
  return v.get<int64_t>();
}

double read_real(const Json& v, const std::string& path) {
  if (v.is_number()) return v.get<double>();
  if (v.is_string()) {
    const auto& s = v.get_ref<const std::string&>();
    if (s == "nan") return std::numeric_limits<double>::quiet_NaN();
    if (s == "inf") return std::numeric_limits<double>::infinity();
    if (s == "-inf") return -std::numeric_limits<double>::infinity();
  }
  field_error(path, "expected a number or one of \"nan\", \"inf\", \"-inf\"");
}

bool read_bool(const Json& v, const std::string& path) {
  if (!v.is_boolean()) field_error(path, "expected true or false");
  return v.get<bool>();
}

uint64_t read_bits(const Json& v, const std::string& path) {
  const std::string s = read_string(v, path);
  const auto bad = [&] { field_error(path, "expected a hexadecimal bit pattern like \"0x7fc0\""); };
  if (s.size() < 3 || s.size() > 18 || !s.starts_with("0x")) bad();
  const char* digits = s.data() + 2;
  const char* end = s.data() + s.size();
  if (!std::all_of(digits, end, [](char c) { return std::isxdigit(static_cast<unsigned char>(c)) != 0; })) bad();
  uint64_t bits = 0;
  std::from_chars(digits, end, bits, 16);  // cannot fail: 1 to 16 hex digits
  return bits;
}

std::string read_choice(const Json& v, const std::string& path, std::initializer_list<std::string_view> allowed) {
  std::string s = read_string(v, path);
  if (std::find(allowed.begin(), allowed.end(), s) != allowed.end()) return s;
  std::string list;
  for (std::string_view a : allowed) {
    if (!list.empty()) list += '|';
    list += a;
  }
  field_error(path, "'" + s + "' is not one of " + list);
}

const Json& read_array(const Json& v, const std::string& path) {
  if (!v.is_array()) field_error(path, "expected an array");
  return v;
}

// A JSON object being read, with the path that names it in error messages.
class ObjectReader {
 public:
  ObjectReader(const Json& value, std::string path) : value_(value), path_(std::move(path)) {
    if (!value_.is_object()) {
      if (path_.empty()) throw UsageError("expected a JSON object");
      field_error(path_, "expected an object");
    }
  }

  std::string path_of(std::string_view name) const { return join_path(path_, name); }

  const Json& get(std::string_view name) const {
    auto it = value_.find(std::string(name));
    if (it == value_.end()) throw UsageError("missing field '" + path_of(name) + "'");
    return *it;
  }
  bool is_null(std::string_view name) const { return get(name).is_null(); }

  std::string string(std::string_view name) const { return read_string(get(name), path_of(name)); }
  int64_t integer(std::string_view name) const { return read_integer(get(name), path_of(name)); }
  double real(std::string_view name) const { return read_real(get(name), path_of(name)); }
  bool boolean(std::string_view name) const { return read_bool(get(name), path_of(name)); }
  uint64_t bits(std::string_view name) const { return read_bits(get(name), path_of(name)); }
  std::string choice(std::string_view name, std::initializer_list<std::string_view> allowed) const {
    return read_choice(get(name), path_of(name), allowed);
  }
  const Json& array(std::string_view name) const { return read_array(get(name), path_of(name)); }
  ObjectReader object(std::string_view name) const { return ObjectReader(get(name), path_of(name)); }

  std::optional<int64_t> optional_integer(std::string_view name) const {
    if (is_null(name)) return std::nullopt;
    return integer(name);
  }
  std::optional<double> optional_real(std::string_view name) const {
    if (is_null(name)) return std::nullopt;
    return real(name);
  }

 private:
  const Json& value_;
  std::string path_;
};

ToleranceRule rule_from_json(const ObjectReader& in) {
  ToleranceRule rule;
  const std::string kind = in.choice("kind", {"ulp", "abs_rel", "faithful"});
  rule.kind = kind == "ulp"       ? ToleranceRule::Kind::ulp
              : kind == "abs_rel" ? ToleranceRule::Kind::abs_rel
                                  : ToleranceRule::Kind::faithful;
  rule.max_ulps = in.integer("max_ulps");
  rule.atol = in.real("atol");
  rule.rtol = in.real("rtol");
  rule.factor = in.real("factor");
  rule.derivation = in.string("derivation");
  return rule;
}

WorstElement worst_from_json(const ObjectReader& in) {
  WorstElement w;
  w.flat_index = in.integer("index");
  w.coordinates = in.string("coordinates");
  w.actual = in.real("actual");
  w.expected = in.real("expected");
  w.actual_bits = in.bits("actual_bits");
  w.expected_bits = in.bits("expected_bits");
  w.abs_error = in.real("abs_error");
  w.excess = in.real("excess");
  return w;
}

Agreement agreement_from_json(const ObjectReader& in) {
  Agreement a;
  a.output = in.string("output");
  a.rule = rule_from_json(in.object("rule"));
  a.elements = in.integer("elements");
  a.max_abs_error = in.real("max_abs_error");
  a.max_rel_error = in.real("max_rel_error");
  a.mean_abs_error = in.real("mean_abs_error");
  a.rms_error = in.real("rms_error");
  a.max_ulp_distance = in.real("max_ulp_distance");
  a.violations = in.integer("violations");
  a.nonfinite_mismatches = in.integer("nonfinite_mismatches");
  a.signed_zero_mismatches = in.integer("signed_zero_mismatches");
  a.faithful_max_abs_error = in.real("faithful_max_abs_error");
  a.faithful_rms_error = in.real("faithful_rms_error");
  a.shape_error = in.string("shape_error");
  const std::string worst_path = in.path_of("worst");
  const Json& worst = in.array("worst");
  for (size_t i = 0; i < worst.size(); ++i)
    a.worst.push_back(worst_from_json(ObjectReader(worst[i], index_path(worst_path, i))));
  // `pass` is derived from the counts; a file where they disagree was edited or corrupted.
  if (in.boolean("pass") != a.pass()) {
    field_error(in.path_of("pass"), "contradicts violations and shape_error");
  }
  return a;
}

TimingStats timing_from_json(const ObjectReader& in) {
  TimingStats t;
  t.clock = in.choice("clock", {"cpu_wall", "cuda_events"});
  t.cold_cache = in.boolean("cold_cache");
  t.iterations_per_repetition = in.integer("iterations_per_repetition");
  const std::string repetitions_path = in.path_of("repetition_seconds");
  const Json& repetitions = in.array("repetition_seconds");
  for (size_t i = 0; i < repetitions.size(); ++i) {
    t.repetition_seconds.push_back(read_real(repetitions[i], index_path(repetitions_path, i)));
  }
  t.median_seconds = in.real("median_seconds");
  t.min_seconds = in.real("min_seconds");
  t.mean_seconds = in.real("mean_seconds");
  t.stddev_seconds = in.real("stddev_seconds");
  t.cv = in.real("cv");
  return t;
}

Throughput throughput_from_json(const ObjectReader& in) {
  Throughput t;
  t.flops = in.real("flops");
  t.bytes = in.real("bytes");
  t.bound = in.choice("bound", {"memory", "compute"});
  t.tflops_per_s = in.real("tflops_per_s");
  t.gbytes_per_s = in.real("gbytes_per_s");
  t.peak = in.optional_real("peak");
  t.fraction_of_peak = in.optional_real("fraction_of_peak");
  return t;
}

MemoryUse memory_from_json(const ObjectReader& in) {
  MemoryUse m;
  m.measured_peak_bytes = in.integer("measured_peak_bytes");
  m.predicted_peak_bytes = in.integer("predicted_peak_bytes");
  m.pool_reserved_peak_bytes = in.optional_integer("pool_reserved_peak_bytes");
  m.untracked_bytes = in.optional_integer("untracked_bytes");
  m.process_max_rss_bytes = in.optional_integer("process_max_rss_bytes");
  return m;
}

bool is_device_name(std::string_view device) {
  if (device == "cpu" || device == "none") return true;
  constexpr std::string_view cuda = "cuda:";
  if (!device.starts_with(cuda) || device.size() == cuda.size()) return false;
  return std::all_of(device.begin() + cuda.size(), device.end(), [](char c) { return c >= '0' && c <= '9'; });
}

bool is_canonical_dtype(const std::string& name) {
  const std::optional<DType> parsed = parse_dtype(name);
  return parsed && dtype_name(*parsed) == name;  // parse_dtype also takes aliases such as "fp32"
}

// The machine object is kept as JSON, but everything `gauge compare` and readers of the file rely on
// must be there and have the right type.
void check_machine(const ObjectReader& in) {
  for (std::string_view name :
       {"host", "gpu_unavailable_reason", "gauge_version", "git_commit", "compiler", "build_type"}) {
    in.string(name);
  }
  in.boolean("built_with_cuda");
  const ObjectReader cpu = in.object("cpu");
  cpu.string("model");
  cpu.integer("logical_cores");
  if (!in.is_null("gpu")) {
    const ObjectReader gpu = in.object("gpu");
    for (std::string_view name :
         {"name", "cc", "driver_version", "runtime_version", "cublas_version", "nccl_version"}) {
      gpu.string(name);
    }
    for (std::string_view name : {"sm_count", "memory_bytes", "l2_bytes"}) gpu.integer(name);
    gpu.real("measured_sm_clock_mhz");
  }
  if (!in.is_null("gpu_peaks")) {
    const ObjectReader peaks = in.object("gpu_peaks");
    peaks.string("table_entry");
    peaks.string("source");
    peaks.real("hbm_gbps");
    const std::string tflops_path = peaks.path_of("tflops");
    peaks.object("tflops");  // an object of dtype -> TFLOP/s
    for (const auto& [dtype, value] : peaks.get("tflops").items()) {
      if (!is_canonical_dtype(dtype)) field_error(tflops_path, "'" + dtype + "' is not a dtype");
      read_real(value, join_path(tflops_path, dtype));
    }
  }
}

std::string one_line(std::string text) {
  std::replace_if(
      text.begin(), text.end(), [](char c) { return c == '\n' || c == '\r'; }, ' ');
  return text;
}

std::string strftime_utc(const char* format) {
  const std::time_t now = std::time(nullptr);
  std::tm utc{};
  gmtime_r(&now, &utc);
  char text[64];
  const size_t length = std::strftime(text, sizeof text, format, &utc);
  return std::string(text, length);
}

}  // namespace

std::string_view status_name(RecordStatus s) {
  switch (s) {
    case RecordStatus::ok: return "ok";
    case RecordStatus::disagree: return "disagree";
    case RecordStatus::no_cuda_device: return "no_cuda_device";
    case RecordStatus::not_implemented: return "not_implemented";
    case RecordStatus::unsupported_device: return "unsupported_device";
    case RecordStatus::error: return "error";
  }
  return "?";
}

std::optional<RecordStatus> parse_status(std::string_view s) {
  for (RecordStatus status : {RecordStatus::ok, RecordStatus::disagree, RecordStatus::no_cuda_device,
                              RecordStatus::not_implemented, RecordStatus::unsupported_device, RecordStatus::error}) {
    if (status_name(status) == s) return status;
  }
  return std::nullopt;
}

std::string Record::key() const { return suite + "/" + case_name + "/" + shape + "/" + dtype + "/" + impl; }

bool Record::agrees() const {
  return status == RecordStatus::ok &&
         std::all_of(agreement.begin(), agreement.end(), [](const Agreement& a) { return a.pass(); });
}

nlohmann::ordered_json machine_to_json(const MachineInfo& m) {
  Json gpu = nullptr;
  if (m.gpu) {
    const gpu::DeviceInfo& d = *m.gpu;
    gpu = Json{{"name", d.name},
               {"cc", std::to_string(d.cc_major) + "." + std::to_string(d.cc_minor)},
               {"sm_count", d.sm_count},
               {"memory_bytes", d.memory_bytes},
               {"l2_bytes", d.l2_bytes},
               {"measured_sm_clock_mhz", real_to_json(d.measured_sm_clock_mhz)},
               {"driver_version", d.driver_version},
               {"runtime_version", d.runtime_version},
               {"cublas_version", d.cublas_version},
               {"nccl_version", d.nccl_version}};
  }
  Json peaks = nullptr;
  if (m.gpu_peaks) {
    Json tflops = Json::object();
    for (const auto& [dtype, value] : m.gpu_peaks->tflops) tflops[std::string(dtype_name(dtype))] = real_to_json(value);
    peaks = Json{{"table_entry", m.gpu_peaks->table_entry},
                 {"tflops", std::move(tflops)},
                 {"hbm_gbps", real_to_json(m.gpu_peaks->hbm_gbps)},
                 {"source", m.gpu_peaks->source}};
  }
  return Json{{"host", m.host},
              {"cpu", Json{{"model", m.cpu.model}, {"logical_cores", m.cpu.logical_cores}}},
              {"gpu", std::move(gpu)},
              {"gpu_unavailable_reason", m.gpu_unavailable_reason},
              {"gpu_peaks", std::move(peaks)},
              {"gauge_version", m.gauge_version},
              {"git_commit", m.git_commit},
              {"compiler", m.compiler},
              {"build_type", m.build_type},
              {"built_with_cuda", m.built_with_cuda}};
}

nlohmann::ordered_json to_json(const ToleranceRule& rule) {
  return Json{{"kind", rule_kind_name(rule.kind)},   {"max_ulps", rule.max_ulps},
              {"atol", real_to_json(rule.atol)},     {"rtol", real_to_json(rule.rtol)},
              {"factor", real_to_json(rule.factor)}, {"derivation", rule.derivation}};
}

ToleranceRule tolerance_rule_from_json(const nlohmann::ordered_json& j) {
  try {
    return rule_from_json(ObjectReader(j, ""));
  } catch (const UsageError& e) {
    throw UsageError(std::string("tolerance rule: ") + e.what());
  }
}

nlohmann::ordered_json to_json(const Record& r) {
  if (r.status == RecordStatus::disagree && (r.timing || r.throughput)) {
    throw RuntimeFailure("record " + r.key() +
                         ": status disagree with a timing or throughput set (no speed without agreement)");
  }
  Json dims = Json::object();
  for (const auto& [name, value] : r.dims) dims[name] = value;
  Json agreement = Json::array();
  for (const Agreement& a : r.agreement) agreement.push_back(agreement_to_json(a));
  Json counters = Json::array();
  for (const CounterRecord& c : r.counters) {
    counters.push_back(Json{{"name", c.name},
                            {"measured", real_to_json(c.measured)},
                            {"predicted", optional_real_to_json(c.predicted)}});
  }
  return Json{{"suite", r.suite},
              {"case", r.case_name},
              {"shape", r.shape},
              {"dims", std::move(dims)},
              {"dtype", r.dtype},
              {"impl", r.impl},
              {"device", r.device},
              {"status", status_name(r.status)},
              {"note", r.note},
              {"agreement", std::move(agreement)},
              {"timing", r.timing ? timing_to_json(*r.timing) : Json(nullptr)},
              {"throughput", r.throughput ? throughput_to_json(*r.throughput) : Json(nullptr)},
              {"memory", r.memory ? memory_to_json(*r.memory) : Json(nullptr)},
              {"counters", std::move(counters)}};
}

Record record_from_json(const nlohmann::ordered_json& j) {
  const ObjectReader in(j, "");
  Record r;
  r.suite = in.string("suite");
  r.case_name = in.string("case");
  r.shape = in.string("shape");
  const ObjectReader dims = in.object("dims");
  for (const auto& [name, value] : in.get("dims").items()) {
    r.dims.emplace_back(name, read_integer(value, dims.path_of(name)));
  }
  r.dtype = in.string("dtype");
  if (!is_canonical_dtype(r.dtype)) field_error("dtype", "'" + r.dtype + "' is not a dtype");
  r.impl = in.choice("impl", {"reference", "optimized"});
  r.device = in.string("device");
  if (!is_device_name(r.device)) field_error("device", "'" + r.device + "' is not \"cpu\", \"none\" or \"cuda:N\"");
  r.status = *parse_status(in.choice("status", {"ok", "disagree", "no_cuda_device", "not_implemented", "unsupported_device", "error"}));
  r.note = in.string("note");
  const Json& agreement = in.array("agreement");
  for (size_t i = 0; i < agreement.size(); ++i) {
    r.agreement.push_back(agreement_from_json(ObjectReader(agreement[i], index_path("agreement", i))));
  }
  if (!in.is_null("timing")) r.timing = timing_from_json(in.object("timing"));
  if (!in.is_null("throughput")) r.throughput = throughput_from_json(in.object("throughput"));
  if (!in.is_null("memory")) r.memory = memory_from_json(in.object("memory"));
  if (j.contains("counters")) {
    const Json& counters = in.array("counters");
    for (size_t i = 0; i < counters.size(); ++i) {
      const ObjectReader c(counters[i], index_path("counters", i));
      CounterRecord record;
      record.name = c.string("name");
      record.measured = c.real("measured");
      if (!c.is_null("predicted")) record.predicted = c.real("predicted");
      r.counters.push_back(std::move(record));
    }
  }
  if (r.status == RecordStatus::disagree && (r.timing || r.throughput)) {
    field_error(r.timing ? "timing" : "throughput",
                "must be null when status is disagree (no speed without agreement)");
  }
  return r;
}

nlohmann::ordered_json to_json(const ResultsFile& f) {
  Json records = Json::array();
  for (const Record& r : f.records) records.push_back(to_json(r));
  return Json{{"schema_version", f.schema_version},
              {"created_utc", f.created_utc},
              {"machine", f.machine},
              {"records", std::move(records)}};
}

ResultsFile read_results(const std::string& path) {
  try {
    std::string text;
    {
      std::FILE* file = std::fopen(path.c_str(), "rb");
      if (file == nullptr) throw UsageError(std::string("cannot open: ") + std::strerror(errno));
      char buffer[1 << 16];
      size_t n = 0;
      while ((n = std::fread(buffer, 1, sizeof buffer, file)) > 0) text.append(buffer, n);
      const int read_errno = errno;
      const bool failed = std::ferror(file) != 0;
      std::fclose(file);
      if (failed) throw UsageError(std::string("cannot read: ") + std::strerror(read_errno));
    }

    Json doc;
    try {
      doc = Json::parse(text);
    } catch (const nlohmann::json::parse_error& e) {
      // Drop nlohmann's "[json.exception.parse_error.101] " prefix: the position is what helps.
      std::string what = e.what();
      const size_t prefix_end = what.find("] ");
      throw UsageError("not valid JSON: " + (prefix_end == std::string::npos ? what : what.substr(prefix_end + 2)));
    }
    if (!doc.is_object()) throw UsageError("the top level is not a JSON object");
    const ObjectReader top(doc, "");

    const Json& version = top.get("schema_version");
    if (!version.is_number_integer()) field_error("schema_version", "expected an integer");
    if (version.get<int64_t>() != kResultsSchemaVersion) {
      throw UsageError("schema_version " + version.dump() + " is not supported (expected " +
                       std::to_string(kResultsSchemaVersion) + ")");
    }

    ResultsFile file;
    file.created_utc = top.string("created_utc");
    check_machine(top.object("machine"));
    file.machine = top.get("machine");
    const Json& records = top.array("records");
    for (size_t i = 0; i < records.size(); ++i) {
      try {
        file.records.push_back(record_from_json(records[i]));
      } catch (const UsageError& e) {
        throw UsageError("record " + std::to_string(i) + ": " + e.what());
      }
    }
    return file;
  } catch (const UsageError& e) {
    throw UsageError(one_line("results file '" + path + "': " + e.what()));
  }
}

void write_file_atomic(const std::string& path, const std::string& text) {
  // Beside the target, so that the rename stays within one file system and is atomic.
  const std::string temp = path + ".tmp." + std::to_string(::getpid());
  const auto fail = [&](int error, bool remove_temp) {
    if (remove_temp) ::unlink(temp.c_str());
    throw UsageError(one_line("cannot write '" + path + "': " + std::strerror(error)));
  };

  const int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) fail(errno, false);
  size_t written = 0;
  while (written < text.size()) {
    const ssize_t n = ::write(fd, text.data() + written, text.size() - written);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int error = errno;
      ::close(fd);
      fail(error, true);
    }
    written += static_cast<size_t>(n);
  }
  // Without fsync a crash after the rename can leave an empty file under the final name.
  if (::fsync(fd) != 0) {
    const int error = errno;
    ::close(fd);
    fail(error, true);
  }
  if (::close(fd) != 0) fail(errno, true);
  if (::rename(temp.c_str(), path.c_str()) != 0) fail(errno, true);

  // Makes the rename itself durable. The file is already complete under its final name, so a
  // failure here is not worth reporting.
  std::string directory = std::filesystem::path(path).parent_path().string();
  if (directory.empty()) directory = ".";
  const int dir_fd = ::open(directory.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd >= 0) {
    ::fsync(dir_fd);
    ::close(dir_fd);
  }
}

void check_writable(const std::string& path) {
  namespace fs = std::filesystem;
  const auto fail = [&](const std::string& problem) {
    throw UsageError(one_line("cannot write '" + path + "': " + problem));
  };
  const fs::path target(path);
  if (path.empty()) fail("empty path");
  if (!target.has_filename()) fail("the path names a directory");
  std::error_code ec;
  const fs::file_status status = fs::status(target, ec);
  if (fs::is_directory(status)) fail("it is a directory");
  if (fs::exists(status) && !fs::is_regular_file(status)) fail("it exists and is not a regular file");

  const fs::path directory = target.has_parent_path() ? target.parent_path() : fs::path(".");
  const fs::file_status directory_status = fs::status(directory, ec);
  if (!fs::exists(directory_status)) fail("directory '" + directory.string() + "' does not exist");
  if (!fs::is_directory(directory_status)) fail("'" + directory.string() + "' is not a directory");
  // access() rather than a trial file: nothing may be left behind, not even after a crash.
  if (::access(directory.c_str(), W_OK | X_OK) != 0)
    fail("directory '" + directory.string() + "': " + std::strerror(errno));
}

std::string utc_now_iso8601() { return strftime_utc("%Y-%m-%dT%H:%M:%SZ"); }

std::string utc_date() { return strftime_utc("%Y-%m-%d"); }

}  // namespace gauge
