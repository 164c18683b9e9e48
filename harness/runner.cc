#include "harness/runner.h"

#include <benchmark/benchmark.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <iomanip>
#include <ostream>
#include <sstream>

#include "harness/error.h"
#include "harness/gpu.h"

namespace gauge {

namespace {

Record skeleton(const CaseDecl& decl, const Point& point, std::string impl, std::string device) {
  Record r;
  r.suite = decl.suite;
  r.case_name = decl.name;
  r.shape = point.shape;
  r.dims = point.dims;
  r.dtype = std::string(dtype_name(point.dtype));
  r.impl = std::move(impl);
  r.device = std::move(device);
  return r;
}

Throughput throughput_of(const CostModel& model, const TimingStats& timing, std::optional<double> peak) {
  Throughput t;
  t.flops = model.flops;
  t.bytes = model.bytes;
  t.bound = model.bound == Bound::compute ? "compute" : "memory";
  const double seconds = timing.median_seconds;
  if (seconds > 0) {
    t.tflops_per_s = model.flops / seconds / 1e12;
    t.gbytes_per_s = model.bytes / seconds / 1e9;
  }
  t.peak = peak;
  if (peak && *peak > 0) {
    t.fraction_of_peak = (model.bound == Bound::compute ? t.tflops_per_s : t.gbytes_per_s) / *peak;
  }
  return t;
}

std::vector<CounterRecord> measured_counters(const std::vector<Counter>& measured,
                                             const std::vector<Counter>& predicted) {
  std::vector<CounterRecord> out;
  for (const Counter& c : measured) {
    CounterRecord r{c.name, c.value, std::nullopt};
    for (const Counter& p : predicted) {
      if (p.name == c.name) r.predicted = p.value;
    }
    out.push_back(r);
  }
  return out;
}

// Enough back-to-back calls that one timed batch lasts about a millisecond: event resolution and
// launch gaps then stay in the noise.
int batch_for(double seconds_per_call) {
  if (!(seconds_per_call > 0)) return 1;
  return static_cast<int>(std::clamp(std::ceil(1e-3 / seconds_per_call), 1.0, 1000.0));
}

}  // namespace

std::optional<DeviceSelection> parse_device_selection(std::string_view s) {
  if (s == "cpu") return DeviceSelection::cpu;
  if (s == "cuda") return DeviceSelection::cuda;
  if (s == "all") return DeviceSelection::all;
  return std::nullopt;
}

Runner::Runner(MachineInfo machine, RunOptions options) : machine_(std::move(machine)), options_(std::move(options)) {}
Runner::~Runner() = default;

gpu::Session& Runner::session() {
  if (!session_) session_ = gpu::Session::open();
  return *session_;
}

Record Runner::run_reference(const CaseDecl& decl, const Point& point, const CostModel& model,
                             const std::vector<HostTensor>& inputs, ReferenceResult& result) {
  Record record = skeleton(decl, point, "reference", "cpu");
  MemoryUse memory;
  // The caller opened the measurement window before making the inputs, so this peak covers inputs,
  // outputs and the reference's temporaries; the caller subtracts what was live before.
  result = decl.reference(point, inputs);
  memory.measured_peak_bytes = mem::host_peak_bytes();
  memory.predicted_peak_bytes = model.predicted_host_peak_bytes;
  record.counters = measured_counters(result.counters, model.predicted_counters);
  // With --device cuda the reference only provides the expected outputs: no record, so no timing.
  if (options_.time && options_.devices != DeviceSelection::cuda) {
    BenchmarkSpec spec;
    spec.name = record_name(decl, point) + "/reference";
    spec.repetitions = options_.repetitions;
    spec.min_seconds_per_repetition = options_.min_seconds_per_repetition;
    spec.body = [&](benchmark::State& state) {
      for (auto _ : state) {
        ReferenceResult again = decl.reference(point, inputs);
        benchmark::DoNotOptimize(again.outputs.data());
      }
    };
    record.timing = run_benchmark(spec);
    // The reference runs on the CPU, whose peaks gauge does not tabulate: rates, no fraction.
    record.throughput = throughput_of(model, *record.timing, std::nullopt);
  }
  memory.process_max_rss_bytes = mem::process_max_rss_bytes();
  record.memory = memory;
  return record;
}

Record Runner::run_optimized(const CaseDecl& decl, const Point& point, const CostModel& model,
                             const std::vector<ToleranceRule>& rules, const std::vector<HostTensor>& inputs,
                             const ReferenceResult& reference) {
  Record record = skeleton(decl, point, "optimized", "cuda:0");
  const std::string why_not = gpu::unavailable_reason();
  if (!why_not.empty()) {
    record.device = "none";
    record.status = RecordStatus::no_cuda_device;
    record.note = why_not;
    return record;
  }
  if (!decl.optimized) {
    record.status = RecordStatus::not_implemented;
    record.note = "the case has no optimized implementation";
    return record;
  }
  gpu::Session& gpu = session();
  gpu.begin_case();
  std::vector<DeviceTensor> device_inputs, device_outputs;
  for (const HostTensor& t : inputs) device_inputs.push_back(gpu.upload(t));
  for (size_t i = 0; i < reference.outputs.size(); ++i) {
    // Under the faithful rule the reference output is the fp64 truth; the optimized side writes the
    // faithful reference's format.
    const HostTensor& t = reference.outputs[i];
    const bool faithful = rules.at(i).kind == ToleranceRule::Kind::faithful;
    const HostTensor& spec = faithful ? reference.faithful.at(i) : t;
    device_outputs.push_back(gpu.allocate_poisoned(t.name(), spec.dtype(), spec.shape()));
  }
  OptimizedArgs args{point, device_inputs, device_outputs, gpu.stream(), gpu};
  std::shared_ptr<void> prepared;
  if (decl.prepare) {
    prepared = decl.prepare(args);
    args.prepared = prepared.get();
  }
  decl.optimized(args);
  gpu.synchronize();

  bool agrees = true;
  for (size_t i = 0; i < device_outputs.size(); ++i) {
    const HostTensor actual = gpu.download(device_outputs[i]);
    const bool faithful_rule = rules[i].kind == ToleranceRule::Kind::faithful;
    const HostTensor* faithful = faithful_rule ? &reference.faithful.at(i) : nullptr;
    record.agreement.push_back(compare(actual, reference.outputs[i], rules[i], faithful));
    agrees = agrees && record.agreement.back().pass();
  }
  const gpu::PoolPeaks peaks = gpu.peaks();
  MemoryUse memory;
  memory.measured_peak_bytes = peaks.used_high_bytes;
  memory.predicted_peak_bytes = model.predicted_device_peak_bytes;
  memory.pool_reserved_peak_bytes = peaks.reserved_high_bytes;
  memory.untracked_bytes = peaks.untracked_bytes;
  record.memory = memory;
  if (!agrees) {
    // No speed without agreement.
    record.status = RecordStatus::disagree;
    record.note = "optimized output disagrees with the reference";
    return record;
  }
  if (options_.time) {
    const auto launch = [&](StreamHandle) { decl.optimized(args); };
    const int batch = options_.cold_cache ? 1 : batch_for(gpu.time_launches(launch, 1, false));
    BenchmarkSpec spec;
    spec.name = record_name(decl, point) + "/optimized";
    spec.manual_time = true;
    spec.repetitions = options_.repetitions;
    spec.min_seconds_per_repetition = options_.min_seconds_per_repetition;
    spec.body = [&](benchmark::State& state) {
      for (auto _ : state) state.SetIterationTime(gpu.time_launches(launch, batch, options_.cold_cache));
    };
    record.timing = run_benchmark(spec);
    record.timing->cold_cache = options_.cold_cache;
    const std::optional<double> peak =
        model.bound == Bound::compute ? peak_tflops(machine_, model.math_dtype) : peak_gbps(machine_);
    record.throughput = throughput_of(model, *record.timing, peak);
  }
  return record;
}

PointOutcome Runner::evaluate_point(const CaseDecl& decl, const Point& point) {
  const CostModel model = decl.model(point);
  PointOutcome outcome;
  const bool want_optimized = options_.devices != DeviceSelection::cpu;

  // The reference always runs: it is what the optimized side is checked against.
  ReferenceResult reference;
  std::vector<HostTensor> inputs;
  const int64_t baseline = mem::host_current_bytes();
  try {
    inputs = decl.inputs(point, options_.seed);
    // The window opens with the inputs live: it measures inputs + outputs + the reference's
    // temporaries, not the scratch space of input generation.
    mem::reset_host_peak();
    outcome.reference = run_reference(decl, point, model, inputs, reference);
    if (outcome.reference.memory) outcome.reference.memory->measured_peak_bytes -= baseline;
  } catch (const std::exception& e) {
    outcome.reference = skeleton(decl, point, "reference", "cpu");
    outcome.reference.status = RecordStatus::error;
    outcome.reference.note = e.what();
    if (want_optimized) {
      Record optimized = skeleton(decl, point, "optimized", "cuda:0");
      optimized.status = RecordStatus::error;
      optimized.note = std::string("the reference failed, nothing to check against: ") + e.what();
      outcome.optimized = optimized;
    }
    return outcome;
  }
  if (want_optimized) {
    try {
      outcome.optimized = run_optimized(decl, point, model, output_rules(decl, point, reference), inputs, reference);
    } catch (const DeviceUnsupported& e) {
      Record optimized = skeleton(decl, point, "optimized", "cuda:0");
      optimized.status = RecordStatus::unsupported_device;
      optimized.note = e.what();
      outcome.optimized = optimized;
    } catch (const std::exception& e) {
      Record optimized = skeleton(decl, point, "optimized", "cuda:0");
      optimized.status = RecordStatus::error;
      optimized.note = e.what();
      outcome.optimized = optimized;
    }
  }
  return outcome;
}

std::vector<Record> Runner::run(const std::vector<Selection>& selection, std::ostream& progress) {
  size_t total = 0, done = 0;
  for (const Selection& s : selection) total += s.points.size();
  std::vector<Record> records;
  for (const Selection& s : selection) {
    for (const Point* point : s.points) {
      ++done;
      progress << "[" << done << "/" << total << "] " << s.decl->full_name() << " " << point->label() << " ..."
               << std::flush;
      PointOutcome outcome = evaluate_point(*s.decl, *point);
      std::ostringstream line;
      auto describe = [&](const Record& r) {
        line << " " << r.impl << ": " << status_name(r.status);
        if (r.timing) line << " " << format_seconds(r.timing->median_seconds);
        if (r.status == RecordStatus::disagree && !r.agreement.empty()) {
          for (const Agreement& a : r.agreement) {
            if (!a.pass()) line << "\n" << a.report();
          }
        } else if (!r.note.empty() && r.status != RecordStatus::ok && r.status != RecordStatus::no_cuda_device) {
          line << " (" << r.note << ")";
        }
        line << ";";
      };
      if (options_.devices != DeviceSelection::cuda) describe(outcome.reference);
      if (outcome.optimized) describe(*outcome.optimized);
      progress << line.str() << "\n" << std::flush;
      if (options_.devices != DeviceSelection::cuda) records.push_back(std::move(outcome.reference));
      if (outcome.optimized) records.push_back(std::move(*outcome.optimized));
    }
  }
  return records;
}

namespace {
// Whole numbers (counts, bytes) in full, others with 6 significant digits.
std::string format_counter_value(double v) {
  std::ostringstream s;
  if (std::isfinite(v) && v == std::floor(v) && std::fabs(v) < 1e15) {
    s << static_cast<int64_t>(v);
  } else {
    s << std::setprecision(6) << v;
  }
  return s.str();
}

// "forward_evaluations=528 (528), activation_peak_bytes=1052672 (1052672)"
std::string format_counters(const std::vector<CounterRecord>& counters) {
  std::ostringstream s;
  for (size_t i = 0; i < counters.size(); ++i) {
    if (i > 0) s << ", ";
    s << counters[i].name << "=" << format_counter_value(counters[i].measured);
    if (counters[i].predicted) s << " (" << format_counter_value(*counters[i].predicted) << ")";
  }
  return s.str();
}
}  // namespace

std::string format_seconds(double seconds) {
  char buffer[32];
  if (seconds < 1e-6) {
    std::snprintf(buffer, sizeof buffer, "%.1f ns", seconds * 1e9);
  } else if (seconds < 1e-3) {
    std::snprintf(buffer, sizeof buffer, "%.2f us", seconds * 1e6);
  } else if (seconds < 1.0) {
    std::snprintf(buffer, sizeof buffer, "%.3f ms", seconds * 1e3);
  } else {
    std::snprintf(buffer, sizeof buffer, "%.3f s", seconds);
  }
  return buffer;
}

std::string format_bytes(double bytes) {
  char buffer[32];
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int unit = 0;
  while (std::fabs(bytes) >= 1024.0 && unit < 4) {
    bytes /= 1024.0;
    ++unit;
  }
  std::snprintf(buffer, sizeof buffer, unit == 0 ? "%.0f %s" : "%.1f %s", bytes, units[unit]);
  return buffer;
}

void print_table(const std::vector<Record>& records, std::ostream& out, TableStyle style) {
  std::vector<std::string> header = {"case", "shape", "dtype", "impl", "agreement", "time (median)",
                                           "rate", "% of peak", "peak mem", "predicted"};
  // A counters column only when some record measured one.
  const bool with_counters =
      std::any_of(records.begin(), records.end(), [](const Record& r) { return !r.counters.empty(); });
  if (with_counters) header.push_back("counters (predicted)");
  std::vector<std::vector<std::string>> rows;
  for (const Record& r : records) {
    std::string agreement;
    if (r.impl == "reference") {
      agreement = r.status == RecordStatus::ok ? "reference" : std::string(status_name(r.status));
    } else if (r.status == RecordStatus::ok || r.status == RecordStatus::disagree) {
      int64_t violations = 0;
      double ulps = 0;
      for (const Agreement& a : r.agreement) {
        violations += a.violations;
        ulps = std::max(ulps, a.max_ulp_distance);
      }
      std::ostringstream s;
      if (r.status == RecordStatus::ok) {
        s << "pass (";
        if (ulps == 0) {
          s << "bit-exact";
        } else {
          s << "max " << std::setprecision(3) << ulps << " ulp";
        }
        s << ")";
      } else {
        s << "FAIL (" << violations << " bad)";
      }
      agreement = s.str();
    } else {
      // The reason (e.g. why there is no CUDA device) is printed once under the table.
      agreement = r.status == RecordStatus::no_cuda_device ? "no CUDA device" : std::string(status_name(r.status));
    }
    std::string time = r.timing ? format_seconds(r.timing->median_seconds) : "-";
    std::string rate = "-", fraction = "-";
    if (r.throughput && r.timing) {
      char buffer[64];
      if (r.throughput->bound == "compute") {
        std::snprintf(buffer, sizeof buffer, "%.2f TFLOP/s", r.throughput->tflops_per_s);
      } else {
        std::snprintf(buffer, sizeof buffer, "%.1f GB/s", r.throughput->gbytes_per_s);
      }
      rate = buffer;
      if (r.throughput->fraction_of_peak) {
        std::snprintf(buffer, sizeof buffer, "%.1f%% %s", *r.throughput->fraction_of_peak * 100.0,
                      r.throughput->bound == "compute" ? "MFU" : "BW");
        fraction = buffer;
      } else {
        fraction = r.impl == "reference" ? "n/a (cpu)" : "peak unknown";
      }
    }
    std::string peak = r.memory ? format_bytes(static_cast<double>(r.memory->measured_peak_bytes)) : "-";
    std::string predicted = r.memory ? format_bytes(static_cast<double>(r.memory->predicted_peak_bytes)) : "-";
    rows.push_back({r.suite + "/" + r.case_name, r.shape, r.dtype, r.impl, agreement, time, rate, fraction, peak,
                    predicted});
    if (with_counters) rows.back().push_back(format_counters(r.counters));
  }
  std::vector<size_t> widths(header.size());
  for (size_t c = 0; c < header.size(); ++c) widths[c] = header[c].size();
  for (const auto& row : rows) {
    for (size_t c = 0; c < row.size(); ++c) widths[c] = std::max(widths[c], std::min<size_t>(row[c].size(), 60));
  }
  const bool markdown = style == TableStyle::markdown;
  auto print_row = [&](const std::vector<std::string>& row) {
    if (markdown) out << "| ";
    for (size_t c = 0; c < row.size(); ++c) {
      out << std::left << std::setw(static_cast<int>(widths[c])) << row[c]
          << (c + 1 < row.size() ? (markdown ? " | " : "  ") : (markdown ? " |\n" : "\n"));
    }
  };
  print_row(header);
  std::vector<std::string> rule;
  for (size_t w : widths) rule.push_back(std::string(w, '-'));
  print_row(rule);
  for (const auto& row : rows) print_row(row);
  std::vector<std::string> notes;
  for (const Record& r : records) {
    if (r.status == RecordStatus::ok || r.note.empty()) continue;
    const std::string note = r.status == RecordStatus::no_cuda_device
                                 ? "optimized side not run: " + r.note
                                 : r.suite + "/" + r.case_name + " " + r.shape + " " + r.dtype + " " + r.impl + ": " + r.note;
    if (std::find(notes.begin(), notes.end(), note) == notes.end()) notes.push_back(note);
  }
  for (const std::string& note : notes) out << "\n" << note;
  if (!notes.empty()) out << "\n";
}

}  // namespace gauge
