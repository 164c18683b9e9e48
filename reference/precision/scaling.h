// Reference per-tensor fp8 scaling: amax, the scale formula, current and delayed scaling, and the
// scaled cast. The definition of correct for gauge; the optimized side reproduces every output bit
// for bit.
//
// amax(x) = max_i |x_i| (exact: a maximum needs no rounding). An empty tensor has amax 0. If any
//   element is NaN the amax is NaN, returned as the canonical quiet NaN 0x7FC00000 (torch.amax
//   propagates NaN too; a payload would depend on which NaN won). Inf elements give amax Inf.
//
// scale_from_amax(amax, format, margin), all in fp32 with correctly rounded operations:
//   amax == 0            -> 1 (nothing to scale; Transformer Engine keeps a neutral scale as well)
//   amax finite, > 0     -> s = fl32(fp8_max / amax), replaced by FLT_MAX if that overflows to Inf
//                           (amax below fp8_max / FLT_MAX ~ 1.3e-36), then scale = fl32(s * 2^-margin),
//                           raised to FLT_MIN (2^-126) when that is smaller (a huge amax with a large
//                           margin): the scale stays a positive normal number whose inverse is finite,
//                           and amax * FLT_MIN <= FLT_MAX * 2^-126 < 4 still fits every fp8 format
//                           (only the margin's headroom is not honoured then)
//   amax NaN, Inf or < 0 -> gauge::UsageError (a tensor holding NaN or Inf has no meaningful scale)
//   margin outside [0, 32] -> gauge::UsageError
//   fp8_max is 448 (e4m3) or 57344 (e5m2).
// scale_inv = fl32(1 / scale), recorded beside the fp8 data so that a consumer can dequantize.
//
// scaled cast: y_i = fp8(fl32(x_i * scale)) with the fp8 cast of reference/precision/fp8.h in the
//   chosen overflow mode; a NaN x_i is cast as it is (a product of NaN has no value, and hardware
//   multipliers do not agree on the NaN they return), so its sign and payload follow the cast's NaN
//   rule. The scale must be finite and > 0 (UsageError: NaN, Inf, zero, negative).
//
// Current scaling: amax of this very tensor -> scale -> scaled cast.
// Delayed scaling: the scale comes from an amax history of `window` entries (newest first, zeros
//   until filled, as in Transformer Engine): history amax = the max of the window or its newest entry
//   (AmaxAlgorithm) -> scale -> scaled cast of this tensor; the amax of this tensor is measured in the
//   same pass and recorded: new history = {amax(x), history[0 .. window-2]}, and next_scale (for the
//   next step) is computed from the new history. The window is 1 .. 1024 entries.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "reference/precision/fp8_format.h"

namespace gauge::reference::precision {

using gauge::precision::AmaxAlgorithm;
using gauge::precision::Fp8Format;
using gauge::precision::Fp8Overflow;

inline constexpr int kMaxMargin = 32;
inline constexpr int kMaxAmaxWindow = 1024;

float amax(std::span<const float> x);
float scale_from_amax(float amax, Fp8Format format, int margin);
float scale_inverse(float scale);  // UsageError for a scale that is not finite and > 0

void scaled_cast(std::span<const float> x, float scale, Fp8Format format, Fp8Overflow overflow, std::span<uint8_t> y);

// The window of past amaxes, newest first.
class AmaxHistory {
 public:
  AmaxHistory(int window, AmaxAlgorithm algorithm);  // UsageError outside [1, kMaxAmaxWindow]
  // Builds a history from stored entries (newest first); the window is entries.size().
  AmaxHistory(std::span<const float> entries, AmaxAlgorithm algorithm);

  void record(float amax);  // shifts the window; UsageError for a negative amax
  float amax() const;       // by the algorithm; NaN if the chosen entries hold one
  int window() const { return static_cast<int>(entries_.size()); }
  AmaxAlgorithm algorithm() const { return algorithm_; }
  std::span<const float> entries() const { return entries_; }

 private:
  std::vector<float> entries_;
  AmaxAlgorithm algorithm_;
};

struct CurrentScaling {
  float amax = 0;
  float scale = 1;
  float scale_inv = 1;
};
CurrentScaling current_scaling_cast(std::span<const float> x, Fp8Format format, Fp8Overflow overflow, int margin,
                                    std::span<uint8_t> y);

struct DelayedScaling {
  float scale = 1;      // used for this tensor (from the history before it)
  float scale_inv = 1;  // 1 / scale
  float amax = 0;       // of this tensor, now the newest history entry
  float next_scale = 1; // from the updated history
};
// Casts x with the scale of `history`, then records amax(x) into `history`.
DelayedScaling delayed_scaling_cast(std::span<const float> x, AmaxHistory& history, Fp8Format format,
                                    Fp8Overflow overflow, int margin, std::span<uint8_t> y);

}  // namespace gauge::reference::precision
