// Device-side fills from the counter-based RNG of harness/philox.h. They produce exactly what the host
// functions of philox.h produce for the same (seed, tensor id, index): gauge::rng::bits_at(seed,
// tensor_id, Stream::values, i) and gauge::rng::uniform_at(seed, tensor_id, i, low, high).
// Enqueued on `stream`; `out` is a device pointer of any 4-byte alignment; n == 0 launches nothing.
#pragma once

#include <cstdint>

#include "harness/stream.h"

namespace gauge::gpu {

void fill_philox_bits(uint32_t* out, int64_t n, uint64_t seed, uint32_t tensor_id, StreamHandle stream);
void fill_uniform(float* out, int64_t n, uint64_t seed, uint32_t tensor_id, float low, float high,
                  StreamHandle stream);

}  // namespace gauge::gpu
