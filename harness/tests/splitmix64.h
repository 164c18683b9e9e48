// splitmix64 (Steele, Lea, Flood 2014): a tiny deterministic generator for test inputs that must not
// come from the Philox stream under test.
#pragma once

#include <cstdint>

namespace gauge::test_support {

class SplitMix64 {
 public:
  explicit SplitMix64(uint64_t seed) : state_(seed) {}
  uint64_t next() {
    uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  uint32_t next_u32() { return static_cast<uint32_t>(next() >> 32); }
  uint32_t below(uint32_t n) { return static_cast<uint32_t>(next() % n); }
  // Uniform in [lo, hi).
  float uniform(float lo, float hi) {
    const float u = static_cast<float>(next() >> 40) * 0x1.0p-24f;
    return lo + (hi - lo) * u;
  }

 private:
  uint64_t state_;
};

}  // namespace gauge::test_support
