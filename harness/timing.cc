#include "harness/timing.h"

#include <benchmark/benchmark.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <numeric>
#include <sstream>

#include "harness/error.h"

namespace gauge {

namespace {

// Collects each repetition of the benchmark being run, and forwards every run to one JSONReporter
// that accumulates Google Benchmark's own JSON for the whole process.
class CollectingReporter : public benchmark::BenchmarkReporter {
 public:
  bool ReportContext(const Context& context) override {
    if (!json_context_written_) {
      json_.SetOutputStream(&json_text_);
      json_.SetErrorStream(&json_errors_);
      json_.ReportContext(context);
      json_context_written_ = true;
    }
    return true;
  }
  void ReportRuns(const std::vector<Run>& runs) override {
    json_.ReportRuns(runs);
    for (const Run& run : runs) {
      if (run.error_occurred) error_ = run.error_message.empty() ? "benchmark failed" : run.error_message;
      if (run.run_type != Run::RT_Iteration || run.error_occurred || run.iterations <= 0) continue;
      repetition_seconds_.push_back(run.real_accumulated_time / static_cast<double>(run.iterations));
      iterations_ = run.iterations;
    }
  }
  void Finalize() override {}

  void start_benchmark() {
    repetition_seconds_.clear();
    error_.clear();
    iterations_ = 0;
  }
  std::vector<double> repetition_seconds() const { return repetition_seconds_; }
  const std::string& error() const { return error_; }
  int64_t iterations() const { return iterations_; }
  std::string json() {
    if (!json_context_written_) return "{\"benchmarks\": []}\n";
    std::ostringstream copy;
    copy << json_text_.str();
    // JSONReporter::Finalize closes the array and object; run it on a scratch copy so later runs can
    // still be appended to the real one.
    benchmark::JSONReporter closing;
    std::ostringstream tail, ignored;
    closing.SetOutputStream(&tail);
    closing.SetErrorStream(&ignored);
    closing.Finalize();
    // A fresh reporter prints "\n  ]\n}\n" on Finalize (nothing was opened): exactly the closing text.
    copy << tail.str();
    return copy.str();
  }

 private:
  benchmark::JSONReporter json_;
  std::ostringstream json_text_, json_errors_;
  bool json_context_written_ = false;
  std::vector<double> repetition_seconds_;
  std::string error_;
  int64_t iterations_ = 0;
};

CollectingReporter& reporter() {
  static CollectingReporter instance;
  return instance;
}

}  // namespace

TimingStats summarize_repetitions(std::vector<double> repetition_seconds) {
  TimingStats stats;
  stats.repetition_seconds = repetition_seconds;
  if (repetition_seconds.empty()) return stats;
  std::vector<double> sorted = repetition_seconds;
  std::sort(sorted.begin(), sorted.end());
  const size_t n = sorted.size();
  stats.median_seconds = n % 2 ? sorted[n / 2] : 0.5 * (sorted[n / 2 - 1] + sorted[n / 2]);
  stats.min_seconds = sorted.front();
  stats.mean_seconds = std::accumulate(sorted.begin(), sorted.end(), 0.0) / static_cast<double>(n);
  double squares = 0.0;
  for (double t : sorted) squares += (t - stats.mean_seconds) * (t - stats.mean_seconds);
  stats.stddev_seconds = n > 1 ? std::sqrt(squares / static_cast<double>(n - 1)) : 0.0;
  stats.cv = stats.mean_seconds > 0 ? stats.stddev_seconds / stats.mean_seconds : 0.0;
  return stats;
}

TimingStats run_benchmark(const BenchmarkSpec& spec) {
  benchmark::ClearRegisteredBenchmarks();
  benchmark::internal::Benchmark* b = benchmark::RegisterBenchmark(spec.name.c_str(), spec.body);
  b->Repetitions(std::max(1, spec.repetitions))
      ->ReportAggregatesOnly(false)
      ->MinTime(spec.min_seconds_per_repetition)
      ->Unit(benchmark::kMicrosecond);
  if (spec.manual_time) {
    b->UseManualTime();
  } else {
    b->UseRealTime();
  }
  reporter().start_benchmark();
  benchmark::RunSpecifiedBenchmarks(&reporter());
  benchmark::ClearRegisteredBenchmarks();
  if (!reporter().error().empty()) throw RuntimeFailure(spec.name + ": " + reporter().error());
  TimingStats stats = summarize_repetitions(reporter().repetition_seconds());
  if (stats.repetition_seconds.empty()) throw RuntimeFailure(spec.name + ": the benchmark produced no timing");
  stats.clock = spec.manual_time ? "cuda_events" : "cpu_wall";
  stats.iterations_per_repetition = reporter().iterations();
  return stats;
}

std::string google_benchmark_json() { return reporter().json(); }

}  // namespace gauge
