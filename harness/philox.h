// Counter-based random numbers: Philox4x32-10 (Salmon et al., SC'11, "Parallel random numbers: as
// easy as 1, 2, 3"). The same header compiles for host and device, so a tensor's values depend only
// on (seed, tensor id, element index), never on the device, the launch shape or generation order.
//
// Keying: key = seed (64 bits); counter = {block_lo, block_hi, tensor_id, stream}. One Philox call
// yields four 32-bit words; uniform floats use one word per element (element i reads block i/4,
// word i%4), normals use two words per element (block i/2, words 2*(i%2) and 2*(i%2)+1).
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define GAUGE_HD __host__ __device__ __forceinline__
#else
#define GAUGE_HD inline
#endif

namespace gauge::rng {

struct Philox4x32Counter {
  uint32_t w[4];
};
struct Philox4x32Key {
  uint32_t w[2];
};

namespace detail {
constexpr uint32_t kPhiloxM0 = 0xD2511F53u;
constexpr uint32_t kPhiloxM1 = 0xCD9E8D57u;
constexpr uint32_t kPhiloxW0 = 0x9E3779B9u;  // golden ratio
constexpr uint32_t kPhiloxW1 = 0xBB67AE85u;  // sqrt(3) - 1

GAUGE_HD void mulhilo32(uint32_t a, uint32_t b, uint32_t& hi, uint32_t& lo) {
  const uint64_t product = static_cast<uint64_t>(a) * static_cast<uint64_t>(b);
  hi = static_cast<uint32_t>(product >> 32);
  lo = static_cast<uint32_t>(product);
}

GAUGE_HD Philox4x32Counter philox_round(Philox4x32Counter c, Philox4x32Key k) {
  uint32_t hi0, lo0, hi1, lo1;
  mulhilo32(kPhiloxM0, c.w[0], hi0, lo0);
  mulhilo32(kPhiloxM1, c.w[2], hi1, lo1);
  return Philox4x32Counter{{hi1 ^ c.w[1] ^ k.w[0], lo1, hi0 ^ c.w[3] ^ k.w[1], lo0}};
}
}  // namespace detail

// Ten rounds, the key bumped by the Weyl constants between rounds.
GAUGE_HD Philox4x32Counter philox4x32_10(Philox4x32Counter counter, Philox4x32Key key) {
  for (int round = 0; round < 10; ++round) {
    if (round > 0) {
      key.w[0] += detail::kPhiloxW0;
      key.w[1] += detail::kPhiloxW1;
    }
    counter = detail::philox_round(counter, key);
  }
  return counter;
}

// Distinguishes independent streams drawn for the same tensor (values, dropout masks, rounding).
enum class Stream : uint32_t { values = 0, dropout = 1, stochastic_rounding = 2 };

GAUGE_HD Philox4x32Counter draw_block(uint64_t seed, uint32_t tensor_id, Stream stream,
                                      uint64_t block) {
  const Philox4x32Key key{{static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32)}};
  const Philox4x32Counter counter{{static_cast<uint32_t>(block), static_cast<uint32_t>(block >> 32),
                                   tensor_id, static_cast<uint32_t>(stream)}};
  return philox4x32_10(counter, key);
}

// The 32-bit word owned by element `index` (four elements share one Philox block).
GAUGE_HD uint32_t bits_at(uint64_t seed, uint32_t tensor_id, Stream stream, uint64_t index) {
  const Philox4x32Counter block = draw_block(seed, tensor_id, stream, index >> 2);
  return block.w[index & 3u];
}

// Uniform in [0, 1): the top 24 bits scaled by 2^-24, exact in fp32, so host and device agree bit
// for bit.
GAUGE_HD float uniform01(uint32_t bits) { return static_cast<float>(bits >> 8) * 0x1.0p-24f; }

// Uniform in (0, 1]: for logarithms.
GAUGE_HD float uniform01_open_low(uint32_t bits) {
  return static_cast<float>((bits >> 8) + 1u) * 0x1.0p-24f;
}

GAUGE_HD float uniform_at(uint64_t seed, uint32_t tensor_id, uint64_t index, float low = 0.0f,
                          float high = 1.0f) {
  const float u = uniform01(bits_at(seed, tensor_id, Stream::values, index));
#if defined(__CUDA_ARCH__)
  // Separately rounded multiply and add: nvcc would otherwise contract them into one FMA and the
  // device value would differ from the host's in the last bit.
  return __fadd_rn(low, __fmul_rn(high - low, u));
#else
  return low + (high - low) * u;
#endif
}

}  // namespace gauge::rng
