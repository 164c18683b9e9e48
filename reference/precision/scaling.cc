// Reference fp8 scaling. Every fp32 operation of the definition (division, multiplication by
// 2^-margin, reciprocal, x * scale) is evaluated in double and rounded once to fp32: the operands are
// fp32, and for +, -, *, / a double result rounded to fp32 is the correctly rounded fp32 result
// (double has more than 2 * 24 + 2 bits, so the double rounding is innocuous; the products are even
// exact in double). That is what the device computes with its own correctly rounded fp32 operations.
#include "reference/precision/scaling.h"
#include "reference/precision/rounding_mode.h"

#include <algorithm>
#include <bit>
#include <cfenv>
#include <cmath>
#include <cstdio>
#include <limits>
#include <stdexcept>
#include <string>

#include "harness/error.h"
#include "reference/precision/fp8.h"

namespace gauge::reference::precision {
namespace {

constexpr uint32_t kCanonicalNan = 0x7FC00000u;

float canonical_nan() { return std::bit_cast<float>(kCanonicalNan); }

std::string describe(float v) {
  char text[48];
  std::snprintf(text, sizeof text, "%.9g", static_cast<double>(v));
  return text;
}

void check_scale(float scale, const char* what) {
  if (!std::isfinite(scale) || !(scale > 0.0f)) {
    throw UsageError(std::string(what) + ": the fp8 scale must be finite and positive, got " + describe(scale));
  }
}

// The fp32 roundings below (double -> float) follow the rounding mode: make it to-nearest, and put
// back whatever the caller had.

}  // namespace

float amax(std::span<const float> x) {
  double largest = 0.0;
  for (const float v : x) {
    if (std::isnan(v)) return canonical_nan();
    largest = std::max(largest, std::fabs(static_cast<double>(v)));
  }
  return static_cast<float>(largest);  // one of the inputs' magnitudes: exact
}

float scale_from_amax(float amax_value, Fp8Format format, int margin) {
  if (margin < 0 || margin > kMaxMargin) {
    throw UsageError("fp8 scale: margin " + std::to_string(margin) + " is outside [0, " + std::to_string(kMaxMargin) +
                     "]");
  }
  if (std::isnan(amax_value) || std::isinf(amax_value) || amax_value < 0.0f) {
    throw UsageError("fp8 scale: amax must be finite and non-negative, got " + describe(amax_value) +
                     " (does the tensor hold NaN or Inf?)");
  }
  if (amax_value == 0.0f) return 1.0f;
  const RoundToNearestScope nearest("reference fp8 scaling");
  float quotient = static_cast<float>(fp8_max_finite(format) / static_cast<double>(amax_value));
  if (std::isinf(quotient)) quotient = std::numeric_limits<float>::max();
  const auto scale = static_cast<float>(static_cast<double>(quotient) * std::ldexp(1.0, -margin));
  return std::max(scale, std::numeric_limits<float>::min());
}

float scale_inverse(float scale) {
  check_scale(scale, "fp8 scale_inv");
  const RoundToNearestScope nearest("reference fp8 scaling");
  return static_cast<float>(1.0 / static_cast<double>(scale));
}

void scaled_cast(std::span<const float> x, float scale, Fp8Format format, Fp8Overflow overflow, std::span<uint8_t> y) {
  check_scale(scale, "fp8 scaled cast");
  if (x.size() != y.size()) {
    throw std::invalid_argument("fp8 scaled cast: input has " + std::to_string(x.size()) + " elements, output " +
                                std::to_string(y.size()));
  }
  const RoundToNearestScope nearest("reference fp8 scaling");
  for (size_t i = 0; i < x.size(); ++i) {
    const float scaled =
        std::isnan(x[i]) ? x[i] : static_cast<float>(static_cast<double>(x[i]) * static_cast<double>(scale));
    y[i] = f32_to_fp8(scaled, format, overflow);
  }
}

AmaxHistory::AmaxHistory(int window, AmaxAlgorithm algorithm) : algorithm_(algorithm) {
  if (window < 1 || window > kMaxAmaxWindow) {
    throw UsageError("amax history: window " + std::to_string(window) + " is outside [1, " +
                     std::to_string(kMaxAmaxWindow) + "]");
  }
  entries_.assign(static_cast<size_t>(window), 0.0f);
}

AmaxHistory::AmaxHistory(std::span<const float> entries, AmaxAlgorithm algorithm)
    : AmaxHistory(static_cast<int>(std::min<size_t>(entries.size(), kMaxAmaxWindow + 1)), algorithm) {
  for (const float entry : entries) {
    if (entry < 0.0f) throw UsageError("amax history: negative entry " + describe(entry));
  }
  std::copy(entries.begin(), entries.end(), entries_.begin());
}

void AmaxHistory::record(float amax_value) {
  if (amax_value < 0.0f) throw UsageError("amax history: negative amax " + describe(amax_value));
  std::copy_backward(entries_.begin(), entries_.end() - 1, entries_.end());
  entries_.front() = amax_value;
}

float AmaxHistory::amax() const {
  if (algorithm_ == AmaxAlgorithm::most_recent) return entries_.front();
  return precision::amax(entries_);  // the entries are non-negative: max |a| is max a
}

CurrentScaling current_scaling_cast(std::span<const float> x, Fp8Format format, Fp8Overflow overflow, int margin,
                                    std::span<uint8_t> y) {
  CurrentScaling result;
  result.amax = amax(x);
  result.scale = scale_from_amax(result.amax, format, margin);
  result.scale_inv = scale_inverse(result.scale);
  scaled_cast(x, result.scale, format, overflow, y);
  return result;
}

DelayedScaling delayed_scaling_cast(std::span<const float> x, AmaxHistory& history, Fp8Format format,
                                    Fp8Overflow overflow, int margin, std::span<uint8_t> y) {
  DelayedScaling result;
  result.scale = scale_from_amax(history.amax(), format, margin);
  result.scale_inv = scale_inverse(result.scale);
  scaled_cast(x, result.scale, format, overflow, y);
  result.amax = amax(x);
  history.record(result.amax);
  result.next_scale = scale_from_amax(history.amax(), format, margin);
  return result;
}

}  // namespace gauge::reference::precision
