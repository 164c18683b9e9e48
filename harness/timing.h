// Timing through Google Benchmark: CPU cases use its wall clock, CUDA cases its manual time fed by
// CUDA events. Every repetition's time is kept, so later comparisons can test for noise.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace benchmark {
class State;
}

namespace gauge {

struct TimingStats {
  std::string clock;             // "cpu_wall" or "cuda_events"
  bool cold_cache = false;       // L2 flushed before every timed call
  int64_t iterations_per_repetition = 0;
  std::vector<double> repetition_seconds;  // mean seconds per call, one entry per repetition
  double median_seconds = 0;
  double min_seconds = 0;
  double mean_seconds = 0;
  double stddev_seconds = 0;
  double cv = 0;  // stddev / mean across repetitions
};

TimingStats summarize_repetitions(std::vector<double> repetition_seconds);

struct BenchmarkSpec {
  std::string name;  // Google Benchmark name, e.g. "precision/cast_f32_to_bf16/n=1024/bf16/optimized"
  bool manual_time = false;  // true: the body calls state.SetIterationTime (CUDA events)
  int repetitions = 5;
  double min_seconds_per_repetition = 0.05;
  std::function<void(benchmark::State&)> body;
};

// Registers one benchmark, runs it, and returns its per-repetition times. Throws RuntimeFailure when
// the body reported an error through state.SkipWithError.
TimingStats run_benchmark(const BenchmarkSpec& spec);

// Google Benchmark's own JSON of every benchmark run in this process (so its tools/compare.py works).
std::string google_benchmark_json();

}  // namespace gauge
