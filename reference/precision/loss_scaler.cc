// Reference dynamic loss scaler and unscale (semantics in loss_scaler.h).
//
// The unscale multiply is formed in double: the product of two fp32 values has at most 48 significant
// bits and an exponent far inside double's range, so it is exact, and the conversion to float is then
// the one correctly rounded fp32 multiply (subnormal results included). The 16-bit store is the
// round-to-nearest-even cast of reference/precision/casts.h applied to that fp32 value.
#include "reference/precision/loss_scaler.h"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>

#include "harness/error.h"
#include "reference/precision/casts.h"

namespace gauge::reference::precision {
namespace {

constexpr uint32_t kCanonicalNanF32 = 0x7FFFFFFFu;
constexpr uint16_t kCanonicalNan16 = 0x7FFFu;

// fp32(g * inv_scale), one rounding.
float unscaled(float g, float inv_scale) {
  return static_cast<float>(static_cast<double>(g) * static_cast<double>(inv_scale));
}

bool nonfinite(float x) { return !std::isfinite(x); }

float canonical_f32(float x) {
  if (!std::isnan(x)) return x;
  float nan;
  static_assert(sizeof nan == sizeof kCanonicalNanF32);
  std::memcpy(&nan, &kCanonicalNanF32, sizeof nan);
  return nan;
}

template <class Widen, class Narrow>
bool unscale_16(std::span<const uint16_t> in, std::span<uint16_t> out, float inv_scale, Widen widen, Narrow narrow) {
  bool found = false;
  for (size_t i = 0; i < in.size(); ++i) {
    const float g = widen(in[i]);
    found = found || nonfinite(g);
    const float product = unscaled(g, inv_scale);
    out[i] = std::isnan(product) ? kCanonicalNan16 : narrow(product);
  }
  return found;
}

void check_lengths(size_t in, size_t out) {
  if (in != out) {
    throw UsageError("unscale_and_check: input has " + std::to_string(in) + " elements but output has " +
                     std::to_string(out));
  }
}

}  // namespace

float scaled_by(float scale, double factor) { return static_cast<float>(static_cast<double>(scale) * factor); }

float reciprocal_scale(float scale) {
  // 1 / scale in double, then to float: double rounding of a quotient is innocuous when the wider
  // format has at least 2p + 2 bits (53 >= 2 * 24 + 2), so this is the correctly rounded fp32 reciprocal.
  return static_cast<float>(1.0 / static_cast<double>(scale));
}

DynamicLossScaler::DynamicLossScaler(const LossScalerConfig& config) : config_(config) {
  validate(config_);
  scale_ = static_cast<float>(config_.init_scale);
}

DynamicLossScaler::DynamicLossScaler(const LossScalerConfig& config, float scale, int64_t growth_tracker)
    : config_(config), scale_(scale), growth_tracker_(growth_tracker) {
  validate(config_);
  if (!std::isfinite(scale) || scale <= 0.0f) {
    throw UsageError("loss scaler: a saved scale must be finite and > 0, got " + gauge::precision::detail::config_number(scale));
  }
  if (growth_tracker < 0 || growth_tracker >= config_.growth_interval) {
    throw UsageError("loss scaler: a saved growth tracker must be in [0, " + std::to_string(config_.growth_interval) +
                     "), got " + std::to_string(growth_tracker));
  }
}

bool DynamicLossScaler::update(bool found_inf) {
  ++steps_;
  if (found_inf) {
    scale_ = scaled_by(scale_, config_.backoff_factor);
    growth_tracker_ = 0;
    ++skipped_;
    return false;
  }
  const int64_t successful = growth_tracker_ + 1;
  if (successful == config_.growth_interval) {
    const float grown = scaled_by(scale_, config_.growth_factor);
    if (std::isfinite(grown)) {
      scale_ = grown;
      ++growths_;
    }
    growth_tracker_ = 0;
  } else {
    growth_tracker_ = successful;
  }
  return true;
}

bool unscale_and_check_f32(std::span<const float> in, std::span<float> out, float inv_scale) {
  check_lengths(in.size(), out.size());
  bool found = false;
  for (size_t i = 0; i < in.size(); ++i) {
    const float g = in[i];
    found = found || nonfinite(g);
    out[i] = canonical_f32(unscaled(g, inv_scale));
  }
  return found;
}

bool unscale_and_check_bf16(std::span<const uint16_t> in, std::span<uint16_t> out, float inv_scale) {
  check_lengths(in.size(), out.size());
  return unscale_16(in, out, inv_scale, bf16_to_f32, f32_to_bf16);
}

bool unscale_and_check_f16(std::span<const uint16_t> in, std::span<uint16_t> out, float inv_scale) {
  check_lengths(in.size(), out.size());
  return unscale_16(in, out, inv_scale, f16_to_f32, f32_to_f16);
}

bool unscale_and_check_f32(std::span<float> grads, float inv_scale) {
  return unscale_and_check_f32(std::span<const float>(grads), grads, inv_scale);
}
bool unscale_and_check_bf16(std::span<uint16_t> grads, float inv_scale) {
  return unscale_and_check_bf16(std::span<const uint16_t>(grads), grads, inv_scale);
}
bool unscale_and_check_f16(std::span<uint16_t> grads, float inv_scale) {
  return unscale_and_check_f16(std::span<const uint16_t>(grads), grads, inv_scale);
}

}  // namespace gauge::reference::precision
