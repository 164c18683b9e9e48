// Reference dynamic loss scaling: the definition of correct for gauge's mixed-precision training.
// Semantics are PyTorch's torch.amp.GradScaler (CUDA kernels _amp_foreach_non_finite_check_and_unscale_
// and _amp_update_scale_), written out here:
//
// State: scale (an fp32 value, initially init_scale = 2^16) and growth_tracker (an integer, initially 0:
// the number of consecutive steps without an Inf/NaN gradient since the last change of the scale).
//
// A training step with loss scaling:
//   1. backward of scale * loss: every gradient is scaled by `scale`;
//   2. unscale + check (one pass over every gradient):
//        inv_scale = fp32(1 / scale)                     (correctly rounded reciprocal)
//        found_inf = any gradient element is NaN or +-Inf (checked on the scaled value read)
//        g = round_to_storage(fp32(fp32(g) * inv_scale))  (one fp32 multiply, correctly rounded, then
//                                                          the cast to the gradient's own format:
//                                                          fp32 unchanged, bf16 / fp16 round to
//                                                          nearest even: PyTorch's opmath is fp32)
//      A NaN result is written as the format's canonical quiet NaN (fp32 0x7FFFFFFF, bf16 / fp16
//      0x7FFF): payloads are not kept (the step is skipped anyway, and GPUs canonicalize NaN products).
//   3. the optimizer step runs only when !found_inf (a skipped step is not counted by the optimizer);
//   4. update(found_inf):
//        found_inf:  scale = fp32(scale * backoff_factor), growth_tracker = 0
//        otherwise:  growth_tracker += 1; when it reaches growth_interval:
//                      new = fp32(scale * growth_factor); scale = new if new is finite; growth_tracker = 0
//      Products are formed in double (exact for fp32 * fp32-representable factors up to rounding once
//      to fp32), as PyTorch's kernel multiplies the fp32 scale by a double factor and stores fp32.
//
// Defaults: init_scale 2^16, growth_factor 2, backoff_factor 0.5, growth_interval 2000. Bad
// configurations (a NaN or non-positive scale, growth <= 1, backoff outside (0, 1), interval < 1) throw
// gauge::UsageError with one line (reference/precision/loss_scaler_config.h).
#pragma once

#include <cstdint>
#include <span>

#include "reference/precision/loss_scaler_config.h"

namespace gauge::reference::precision {

using gauge::precision::LossScalerConfig;
using gauge::precision::validate;  // UsageError for a bad configuration (loss_scaler_config.h)

// The fp32 scale after one backoff / growth: fp32(scale * factor), the product formed in double.
float scaled_by(float scale, double factor);
// inv_scale = fp32(1 / scale), correctly rounded.
float reciprocal_scale(float scale);

class DynamicLossScaler {
 public:
  explicit DynamicLossScaler(const LossScalerConfig& config = {});
  // Resumes from a saved state (a checkpoint's scale and growth tracker). UsageError for a scale that
  // is NaN, infinite or <= 0, or a tracker outside [0, growth_interval).
  DynamicLossScaler(const LossScalerConfig& config, float scale, int64_t growth_tracker);

  float scale() const { return scale_; }
  float inv_scale() const { return reciprocal_scale(scale_); }
  int64_t growth_tracker() const { return growth_tracker_; }
  const LossScalerConfig& config() const { return config_; }

  // Step 4 above. Returns true when the step's optimizer update should be applied (no Inf/NaN).
  bool update(bool found_inf);

  // Counters since construction.
  int64_t steps() const { return steps_; }
  int64_t skipped_steps() const { return skipped_; }
  int64_t growths() const { return growths_; }

 private:
  LossScalerConfig config_;
  float scale_ = 65536.0f;
  int64_t growth_tracker_ = 0;
  int64_t steps_ = 0;
  int64_t skipped_ = 0;
  int64_t growths_ = 0;
};

// Step 2 above, in place over one gradient tensor; returns found_inf for that tensor (true when any
// element read was NaN or +-Inf). 16-bit formats are carried as raw bits. Any inv_scale is accepted
// (a NaN or Inf inv_scale turns products into NaN / Inf as IEEE arithmetic says).
bool unscale_and_check_f32(std::span<float> grads, float inv_scale);
bool unscale_and_check_bf16(std::span<uint16_t> grads, float inv_scale);
bool unscale_and_check_f16(std::span<uint16_t> grads, float inv_scale);

// Out-of-place forms: out = unscaled in (same length; UsageError otherwise).
bool unscale_and_check_f32(std::span<const float> in, std::span<float> out, float inv_scale);
bool unscale_and_check_bf16(std::span<const uint16_t> in, std::span<uint16_t> out, float inv_scale);
bool unscale_and_check_f16(std::span<const uint16_t> in, std::span<uint16_t> out, float inv_scale);

}  // namespace gauge::reference::precision
