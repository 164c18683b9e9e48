// Reference fp32 <-> bf16 / fp16 conversions: the definition of correct for gauge.
//
// Semantics (the optimized side must reproduce them bit for bit):
// - fp32 -> bf16 / fp16: round to nearest, ties to even; subnormal results are produced (no
//   flush-to-zero); values beyond the largest finite value by half an ulp or more become +-Inf;
//   +-0, +-Inf keep their sign.
// - NaN in -> quiet NaN out: the sign and the top payload bits are kept (the dropped low bits are
//   truncated) and the quiet bit is set, so a NaN can never turn into Inf.
//   fp32 -> bf16: bits >> 16 | 0x0040;  fp32 -> fp16: sign | 0x7C00 | 0x0200 | (mantissa >> 13).
// - bf16 / fp16 -> fp32: exact; a NaN keeps its sign and payload, with the quiet bit set.
// Narrow values are carried as their raw bits in uint16_t.
#pragma once

#include <cstdint>
#include <span>

namespace gauge::reference::precision {

uint16_t f32_to_bf16(float x);
uint16_t f32_to_f16(float x);
float bf16_to_f32(uint16_t bits);
float f16_to_f32(uint16_t bits);

void cast_f32_to_bf16(std::span<const float> in, std::span<uint16_t> out);
void cast_f32_to_f16(std::span<const float> in, std::span<uint16_t> out);
void cast_bf16_to_f32(std::span<const uint16_t> in, std::span<float> out);
void cast_f16_to_f32(std::span<const uint16_t> in, std::span<float> out);

}  // namespace gauge::reference::precision
