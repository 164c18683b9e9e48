// Input tensors drawn from the counter-based RNG, keyed by (seed, tensor id, element index): the same
// values on every machine and in every generation order.
#pragma once

#include <cstdint>
#include <string>

#include "harness/tensor.h"

namespace gauge::inputs {

inline constexpr uint64_t kDefaultSeed = 0x6761756765ull;  // "gauge"

// fp32 uniform in [low, high).
HostTensor uniform_f32(std::string name, Shape shape, uint64_t seed, uint32_t tensor_id, float low, float high);
// fp32 normal(mean, stddev) by Box-Muller over two uniform words per element (computed in double).
HostTensor normal_f32(std::string name, Shape shape, uint64_t seed, uint32_t tensor_id, float mean, float stddev);
// Raw 32-bit Philox words, one per element.
HostTensor philox_u32(std::string name, Shape shape, uint64_t seed, uint32_t tensor_id);

}  // namespace gauge::inputs
