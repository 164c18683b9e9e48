// CUDA stochastic rounding of fp32 tensors to fp16 and fp8 (E4M3 / E5M2), bit-identical to
// reference/precision/stochastic_rounding.h: element i is rounded with the Philox word
// stochastic_rounding_word(seed, tensor_id, i, step). Device pointers aligned to their element size,
// non-overlapping; 0 <= n <= 2^34 and step < 2^30 (UsageError otherwise). Enqueued on `stream`.
#pragma once

#include <cstdint>

#include "harness/stream.h"
#include "reference/precision/fp8_format.h"

namespace gauge::optimized::precision {

void stochastic_round_f32_to_f16(const float* in, uint16_t* out, int64_t n, uint64_t seed, uint32_t tensor_id,
                                 uint64_t step, StreamHandle stream);
void stochastic_round_f32_to_fp8(const float* in, uint8_t* out, int64_t n, gauge::precision::Fp8Format format,
                                 gauge::precision::Fp8Overflow overflow, uint64_t seed, uint32_t tensor_id,
                                 uint64_t step, StreamHandle stream);

}  // namespace gauge::optimized::precision
