// Every tolerance in gauge is built here, from a format's unit round-off and an accumulation depth,
// or from the "no worse than twice a faithful low-precision reference" rule. Components pick a rule;
// they never write numbers of their own.
#pragma once

#include <cstdint>
#include <string>

#include "harness/dtype.h"

namespace gauge {

struct ToleranceRule {
  enum class Kind : uint8_t {
    // |ordinal(actual) - ordinal(expected)| <= max_ulps in the output format; with max_ulps == 0 the
    // bit patterns must be identical (the sign of zero and NaN payloads included).
    ulp,
    // |actual - expected| <= atol + rtol * |expected|, elementwise.
    abs_rel,
    // Against the fp64 truth, elementwise: |actual - truth| <= factor * max_j |faithful_j - truth_j| + atol,
    // where `faithful` is a straightforward low-precision reference (same input and output formats,
    // fp32 accumulation): the optimized side may be no worse than `factor` times it.
    faithful,
  };
  Kind kind = Kind::ulp;
  int64_t max_ulps = 0;
  double atol = 0.0;
  double rtol = 0.0;
  double factor = 2.0;
  std::string derivation;  // how the numbers were obtained, for records and failure messages

  std::string describe() const;
};

namespace tolerance {

// Bit-exact: for conversions and other operations that round once, correctly.
ToleranceRule exact_bits();
ToleranceRule ulps(int64_t max_ulps, std::string why);

// A sum of `depth` products computed in `accumulate` and rounded once to `output`:
//   rtol = u(output) + gamma_depth(u(accumulate)),  gamma_n(u) = n u / (1 - n u)   (Higham, 3.1)
//   atol = rtol * magnitude   (magnitude: the expected size of sum |terms|, so that cancellation
//                               towards zero does not turn a relative bound into an impossible one)
ToleranceRule accumulation(DType output, DType accumulate, int64_t depth, double magnitude);

// The optimized result may be no worse than `factor` times a faithful low-precision reference.
ToleranceRule faithful(double factor, double atol, std::string why);

double gamma(int64_t n, double u);

}  // namespace tolerance
}  // namespace gauge
