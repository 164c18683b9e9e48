// CUDA fp32 <-> fp8 (E4M3 / E5M2) casts and fp32 -> tf32 rounding, enqueued on `stream`, bit-identical
// to reference/precision/fp8.h (round to nearest even, subnormals kept, saturating or non-saturating
// overflow, the reference's NaN rules; tf32 ties to even). Device pointers aligned to their element
// size, non-overlapping; any n >= 0 (UsageError otherwise). The 16-byte vector path covers the part
// of the buffers where both can be 16-byte aligned, a scalar head and tail the rest, in one launch.
#pragma once

#include <cstdint>

#include "harness/stream.h"
#include "reference/precision/fp8_format.h"

namespace gauge::optimized::precision {

void cast_f32_to_fp8(const float* in, uint8_t* out, int64_t n, gauge::precision::Fp8Format format,
                     gauge::precision::Fp8Overflow overflow, StreamHandle stream);
void cast_fp8_to_f32(const uint8_t* in, float* out, int64_t n, gauge::precision::Fp8Format format,
                     StreamHandle stream);
// tf32 values are stored as fp32 with the low 13 mantissa bits zero; `out` may not alias `in`.
void cast_f32_to_tf32(const float* in, float* out, int64_t n, StreamHandle stream);

}  // namespace gauge::optimized::precision
