// Agreement between an implementation's output and the reference: the metrics every record carries,
// the verdict of one tolerance rule, and the worst elements with their coordinates.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "harness/tensor.h"
#include "harness/tolerance.h"

namespace gauge {

struct WorstElement {
  int64_t flat_index = 0;
  std::string coordinates;  // "[i, j]"
  double actual = 0.0;
  double expected = 0.0;
  uint64_t actual_bits = 0;
  uint64_t expected_bits = 0;
  double abs_error = 0.0;
  double excess = 0.0;  // how far past its bound; the ordering key
};

struct Agreement {
  std::string output;  // name of the tensor compared
  ToleranceRule rule;
  int64_t elements = 0;
  double max_abs_error = 0.0;
  double max_rel_error = 0.0;   // over elements whose expected value is non-zero
  double mean_abs_error = 0.0;  // over finite pairs
  double rms_error = 0.0;
  double max_ulp_distance = 0.0;  // +Inf when a NaN/Inf position differs
  int64_t violations = 0;
  int64_t nonfinite_mismatches = 0;  // NaN/Inf present in one side and not the other, at a position
  int64_t signed_zero_mismatches = 0;
  // faithful rule only
  double faithful_max_abs_error = 0.0;
  double faithful_rms_error = 0.0;
  std::vector<WorstElement> worst;  // up to `worst_count`, largest excess first
  bool pass() const { return violations == 0 && shape_error.empty(); }
  std::string shape_error;  // non-empty when the tensors cannot be compared at all

  // Multi-line report: the rule, the metrics, and the worst elements with coordinates.
  std::string report() const;
};

struct CompareOptions {
  int worst_count = 8;
};

// `expected` is the reference output (for the faithful rule: the fp64 truth) and `faithful` the
// faithful low-precision reference output, required by the faithful rule only.
Agreement compare(const HostTensor& actual, const HostTensor& expected, const ToleranceRule& rule,
                  const HostTensor* faithful = nullptr, CompareOptions options = {});

}  // namespace gauge
