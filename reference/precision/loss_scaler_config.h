// Configuration of dynamic loss scaling (torch.amp.GradScaler's constructor arguments): plain data and
// its validation, shared by the reference scaler (reference/precision/loss_scaler.h, which writes the
// semantics out) and the CUDA scale update (optimized/precision/loss_scale.h). No arithmetic lives here.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>

#include "harness/error.h"

namespace gauge::precision {

struct LossScalerConfig {
  double init_scale = 65536.0;  // 2^16
  double growth_factor = 2.0;
  double backoff_factor = 0.5;
  int64_t growth_interval = 2000;
};

namespace detail {
inline std::string config_number(double x) {
  char buffer[64];
  std::snprintf(buffer, sizeof buffer, "%.17g", x);
  return buffer;
}
}  // namespace detail

// Throws gauge::UsageError naming the bad field and its value: an init_scale that is NaN, infinite or
// <= 0, or whose fp32 rounding or fp32 reciprocal is zero or infinite; a growth factor that is not
// finite or <= 1; a backoff factor outside (0, 1) (NaN included); a growth interval < 1 or >= 2^31
// (the device keeps the growth tracker in an int32, as PyTorch does).
inline void validate(const LossScalerConfig& c) {
  using detail::config_number;
  if (!std::isfinite(c.init_scale) || c.init_scale <= 0.0) {
    throw UsageError("loss scaler: init_scale must be finite and > 0, got " + config_number(c.init_scale));
  }
  const float scale = static_cast<float>(c.init_scale);
  const double reciprocal = 1.0 / static_cast<double>(scale);
  if (!std::isfinite(scale) || scale == 0.0f || !std::isfinite(static_cast<float>(reciprocal)) ||
      static_cast<float>(reciprocal) == 0.0f) {
    throw UsageError("loss scaler: init_scale " + config_number(c.init_scale) +
                     " leaves the fp32 range where the scale and its reciprocal are finite and non-zero");
  }
  if (!std::isfinite(c.growth_factor) || c.growth_factor <= 1.0) {
    throw UsageError("loss scaler: growth_factor must be finite and > 1, got " + config_number(c.growth_factor));
  }
  if (!(c.backoff_factor > 0.0 && c.backoff_factor < 1.0)) {
    throw UsageError("loss scaler: backoff_factor must be in (0, 1), got " + config_number(c.backoff_factor));
  }
  if (c.growth_interval < 1 || c.growth_interval > INT32_MAX) {
    throw UsageError("loss scaler: growth_interval must be in [1, 2^31 - 1], got " + std::to_string(c.growth_interval));
  }
}

}  // namespace gauge::precision
