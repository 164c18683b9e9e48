#include "harness/inputs.h"

#include <cmath>
#include <numbers>

#include "harness/philox.h"

namespace gauge::inputs {

HostTensor uniform_f32(std::string name, Shape shape, uint64_t seed, uint32_t tensor_id, float low, float high) {
  HostTensor t(std::move(name), DType::f32, std::move(shape));
  auto values = t.view<float>();
  for (size_t i = 0; i < values.size(); ++i) values[i] = rng::uniform_at(seed, tensor_id, i, low, high);
  return t;
}

HostTensor normal_f32(std::string name, Shape shape, uint64_t seed, uint32_t tensor_id, float mean, float stddev) {
  HostTensor t(std::move(name), DType::f32, std::move(shape));
  auto values = t.view<float>();
  for (size_t i = 0; i < values.size(); ++i) {
    // Element i owns words 2*(i%2) and 2*(i%2)+1 of block i/2.
    const rng::Philox4x32Counter block = rng::draw_block(seed, tensor_id, rng::Stream::values, i >> 1);
    const size_t lane = 2 * (i & 1u);
    const double radius = std::sqrt(-2.0 * std::log(static_cast<double>(rng::uniform01_open_low(block.w[lane]))));
    const double angle = 2.0 * std::numbers::pi * static_cast<double>(rng::uniform01(block.w[lane + 1]));
    values[i] = static_cast<float>(mean + stddev * radius * std::cos(angle));
  }
  return t;
}

HostTensor philox_u32(std::string name, Shape shape, uint64_t seed, uint32_t tensor_id) {
  HostTensor t(std::move(name), DType::u32, std::move(shape));
  auto values = t.view<uint32_t>();
  for (size_t i = 0; i < values.size(); ++i) values[i] = rng::bits_at(seed, tensor_id, rng::Stream::values, i);
  return t;
}

}  // namespace gauge::inputs
