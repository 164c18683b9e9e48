// CUDA fp32 <-> bf16 / fp16 casts, enqueued on `stream`, with the semantics written down in
// reference/precision/casts.h (round to nearest even, subnormals kept, quiet NaN with sign and top
// payload bits). Pointers are device pointers aligned to their element size, input and output must
// not overlap, any n >= 0 is accepted (RuntimeFailure otherwise), and the 16-byte vector path is
// taken for the part of the buffers where both can be 16-byte aligned.
#pragma once

#include <cstdint>

#include "harness/stream.h"

namespace gauge::optimized::precision {

void cast_f32_to_bf16(const float* in, uint16_t* out, int64_t n, StreamHandle stream);
void cast_f32_to_f16(const float* in, uint16_t* out, int64_t n, StreamHandle stream);
void cast_bf16_to_f32(const uint16_t* in, float* out, int64_t n, StreamHandle stream);
void cast_f16_to_f32(const uint16_t* in, float* out, int64_t n, StreamHandle stream);

}  // namespace gauge::optimized::precision
