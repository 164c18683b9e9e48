#include "harness/compare.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <queue>
#include <sstream>

namespace gauge {

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// Spacing of `dtype` at magnitude |x| (the subnormal spacing below the smallest normal).
double ulp_at(DType dtype, double x) {
  const double u = unit_roundoff(dtype);
  if (u == 0.0) return 1.0;  // integers
  const int mantissa_bits = static_cast<int>(std::lround(-std::log2(u))) - 1;
  int exponent = 0;
  std::frexp(std::fabs(x), &exponent);  // |x| = f * 2^exponent, f in [0.5, 1)
  int min_exponent = 0;
  switch (dtype) {
    case DType::f64: min_exponent = -1021; break;
    case DType::f32:
    case DType::tf32:
    case DType::bf16: min_exponent = -125; break;
    case DType::f16:
    case DType::e5m2: min_exponent = -13; break;
    case DType::e4m3: min_exponent = -5; break;
    default: break;
  }
  return std::ldexp(1.0, std::max(exponent, min_exponent) - 1 - mantissa_bits);
}

bool is_nonfinite(double v) { return !std::isfinite(v); }

struct Ranked {
  double key;
  WorstElement element;
  bool operator<(const Ranked& other) const { return key > other.key; }  // min-heap on key
};

std::string format_value(double v) {
  char buffer[64];
  std::snprintf(buffer, sizeof buffer, "%.9g", v);
  return buffer;
}

std::string format_bits(uint64_t bits) {
  char buffer[32];
  std::snprintf(buffer, sizeof buffer, "0x%llx", static_cast<unsigned long long>(bits));
  return buffer;
}

}  // namespace

Agreement compare(const HostTensor& actual, const HostTensor& expected, const ToleranceRule& rule,
                  const HostTensor* faithful, CompareOptions options) {
  Agreement result;
  result.output = expected.name();
  result.rule = rule;
  result.elements = expected.numel();

  if (actual.shape() != expected.shape()) {
    result.shape_error = "shape " + shape_string(actual.shape()) + " differs from the reference's " +
                         shape_string(expected.shape());
    return result;
  }
  const bool same_dtype = actual.dtype() == expected.dtype();
  if (rule.kind == ToleranceRule::Kind::ulp && !same_dtype) {
    result.shape_error = "a ULP rule needs one dtype, got " + std::string(dtype_name(actual.dtype())) + " and " +
                         std::string(dtype_name(expected.dtype()));
    return result;
  }
  double faithful_bound = 0.0;
  if (rule.kind == ToleranceRule::Kind::faithful) {
    if (faithful == nullptr || faithful->shape() != expected.shape()) {
      result.shape_error = "the faithful rule needs a faithful reference output of the same shape";
      return result;
    }
    double sum_squares = 0.0;
    int64_t finite = 0;
    for (int64_t i = 0; i < expected.numel(); ++i) {
      const double truth = expected.at_as_double(i);
      const double f = faithful->at_as_double(i);
      if (is_nonfinite(truth) || is_nonfinite(f)) continue;
      const double error = std::fabs(f - truth);
      result.faithful_max_abs_error = std::max(result.faithful_max_abs_error, error);
      sum_squares += error * error;
      ++finite;
    }
    result.faithful_rms_error = finite ? std::sqrt(sum_squares / static_cast<double>(finite)) : 0.0;
    faithful_bound = rule.factor * result.faithful_max_abs_error + rule.atol;
  }

  std::priority_queue<Ranked> worst;
  double sum_abs = 0.0, sum_squares = 0.0;
  int64_t finite_pairs = 0;
  const size_t n = static_cast<size_t>(expected.numel());
  for (size_t i = 0; i < n; ++i) {
    const double a = actual.at_as_double(static_cast<int64_t>(i));
    const double e = expected.at_as_double(static_cast<int64_t>(i));
    const uint64_t a_bits = load_bits(actual.dtype(), actual.data(), i);
    const uint64_t e_bits = load_bits(expected.dtype(), expected.data(), i);

    double excess = 0.0;  // |error| over its allowance; > 1 (or any, for bit-exact) is a violation
    bool violation = false;
    double abs_error = 0.0;
    double ulp_distance = 0.0;
    if (is_nonfinite(a) || is_nonfinite(e)) {
      const bool both_nan = std::isnan(a) && std::isnan(e);
      const bool same_infinity = std::isinf(a) && a == e;
      if (both_nan || same_infinity) {
        if (rule.kind == ToleranceRule::Kind::ulp && rule.max_ulps == 0 && a_bits != e_bits) {
          violation = true;  // e.g. a NaN payload or its quiet bit differs
          excess = kInf;
        }
      } else {
        ++result.nonfinite_mismatches;
        violation = true;
        excess = kInf;
        ulp_distance = kInf;
        abs_error = kInf;
      }
    } else {
      abs_error = std::fabs(a - e);
      sum_abs += abs_error;
      sum_squares += abs_error * abs_error;
      ++finite_pairs;
      result.max_abs_error = std::max(result.max_abs_error, abs_error);
      if (e != 0.0) result.max_rel_error = std::max(result.max_rel_error, abs_error / std::fabs(e));
      ulp_distance = same_dtype ? static_cast<double>(std::llabs(ulp_ordinal(actual.dtype(), a_bits) -
                                                                  ulp_ordinal(expected.dtype(), e_bits)))
                                : abs_error / ulp_at(actual.dtype(), e);
      if (a == 0.0 && e == 0.0 && std::signbit(a) != std::signbit(e)) ++result.signed_zero_mismatches;
      switch (rule.kind) {
        case ToleranceRule::Kind::ulp:
          if (rule.max_ulps == 0) {
            violation = a_bits != e_bits;
            excess = violation ? std::max(ulp_distance, 1.0) : 0.0;
          } else {
            excess = ulp_distance / static_cast<double>(rule.max_ulps);
            violation = ulp_distance > static_cast<double>(rule.max_ulps);
          }
          break;
        case ToleranceRule::Kind::abs_rel: {
          const double bound = rule.atol + rule.rtol * std::fabs(e);
          excess = bound > 0 ? abs_error / bound : (abs_error > 0 ? kInf : 0.0);
          violation = abs_error > bound;
          break;
        }
        case ToleranceRule::Kind::faithful:
          excess = faithful_bound > 0 ? abs_error / faithful_bound : (abs_error > 0 ? kInf : 0.0);
          violation = abs_error > faithful_bound;
          break;
      }
    }
    result.max_ulp_distance = std::max(result.max_ulp_distance, ulp_distance);
    if (violation) ++result.violations;

    // Rank violations above everything else, then by excess, then by absolute error.
    const double key = violation ? 1e300 + (std::isinf(excess) ? 1e300 : excess) : std::max(excess, abs_error * 1e-300);
    if (options.worst_count > 0 && (violation || abs_error > 0.0) &&
        (static_cast<int>(worst.size()) < options.worst_count || key > worst.top().key)) {
      WorstElement w;
      w.flat_index = static_cast<int64_t>(i);
      w.actual = a;
      w.expected = e;
      w.actual_bits = a_bits;
      w.expected_bits = e_bits;
      w.abs_error = abs_error;
      w.excess = excess;
      worst.push({key, w});
      if (static_cast<int>(worst.size()) > options.worst_count) worst.pop();
    }
  }
  result.mean_abs_error = finite_pairs ? sum_abs / static_cast<double>(finite_pairs) : 0.0;
  result.rms_error = finite_pairs ? std::sqrt(sum_squares / static_cast<double>(finite_pairs)) : 0.0;
  while (!worst.empty()) {
    WorstElement w = worst.top().element;
    w.coordinates = coordinates_string(expected.shape(), w.flat_index);
    result.worst.push_back(std::move(w));
    worst.pop();
  }
  std::reverse(result.worst.begin(), result.worst.end());
  return result;
}

std::string Agreement::report() const {
  std::ostringstream out;
  out << "output '" << output << "': " << (pass() ? "agrees" : "DISAGREES") << " under " << rule.describe() << "\n";
  if (!shape_error.empty()) {
    out << "  " << shape_error << "\n";
    return out.str();
  }
  out << "  " << violations << " of " << elements << " elements violate; max abs " << format_value(max_abs_error)
      << ", max rel " << format_value(max_rel_error) << ", mean abs " << format_value(mean_abs_error) << ", rms "
      << format_value(rms_error) << ", max ulp " << format_value(max_ulp_distance);
  if (nonfinite_mismatches) out << ", NaN/Inf mismatches " << nonfinite_mismatches;
  if (signed_zero_mismatches) out << ", signed-zero mismatches " << signed_zero_mismatches;
  if (rule.kind == ToleranceRule::Kind::faithful) {
    out << ", faithful max abs " << format_value(faithful_max_abs_error);
  }
  out << "\n";
  if (!worst.empty()) out << "  worst elements (coordinates: actual vs expected):\n";
  for (const WorstElement& w : worst) {
    out << "    " << w.coordinates << ": " << format_value(w.actual) << " vs " << format_value(w.expected)
        << " (bits " << format_bits(w.actual_bits) << " vs " << format_bits(w.expected_bits) << ")  |d| "
        << format_value(w.abs_error) << "  excess x" << format_value(w.excess) << "\n";
  }
  return out.str();
}

}  // namespace gauge
