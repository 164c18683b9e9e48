// Reference stochastic rounding to bf16: the definition of correct for gauge. The optimized side must
// reproduce it bit for bit, so the random word and the comparison are fixed here exactly.
//
// Rounding. Let lo be |x| truncated to the bf16 grid (toward zero) and hi the next bf16 magnitude
// away from zero (past the largest finite bf16 that is Inf), and frac = (|x| - lo) / (hi - lo), the
// fractional position of |x| between them, in [0, 1). With r = (word >> 8) * 2^-24, the top 24 bits
// of the 32-bit random word as a uniform number in [0, 1) (gauge::rng::uniform01), the result is
//     hi (with x's sign)  if r < frac,      lo (with x's sign)  otherwise.
// So |x| rounds away from zero with probability frac (exactly, whenever frac is a multiple of 2^-24,
// which is every fp32 input; within 2^-24 for a double input), and the rounding is unbiased. A value
// already on the bf16 grid (frac = 0) never moves: zeros, Inf and every bf16 value come back exactly.
// NaN becomes the quiet NaN of reference/precision/casts.h (sign and top payload bits, quiet bit set).
//
// For an fp32 x the rule is pure integer arithmetic on its bits b (this is how a kernel does it):
//     up = (word >> 8) < ((b & 0xFFFF) << 8);      bf16 = (b >> 16) + up;
// (frac * 2^24 = (b & 0xFFFF) << 8 because the 16 dropped bits are exactly the fraction of a bf16
// ulp, subnormals included; adding 1 to the sign-magnitude pattern steps the magnitude to the next
// bf16, carrying into the exponent, and from the largest finite bf16 to Inf.)
//
// The random word. Element `index` of the stored tensor `tensor_id` at optimizer step `step` uses
//     word = gauge::rng::bits_at(seed, tensor_id, gauge::rng::Stream::stochastic_rounding,
//                                (uint64_t{step} << 34) | index)
// that is, Philox4x32-10 (harness/philox.h) with key {seed low 32 bits, seed high 32 bits} and
// counter {index >> 2, step, tensor_id, 2 = Stream::stochastic_rounding}, output word number
// index & 3. Requires index < 2^34 and step < 2^30 (so that the 64-bit index argument holds both).
// The optimizer numbers its stored tensors with gauge::optim::stochastic_rounding_tensor_id
// (reference/optim/config.h).
//
// Stochastic rounding to fp16 and fp8 (E4M3 / E5M2) follows the same rule on their grids: lo is |x|
// truncated to the target grid, hi the next magnitude of the grid continued past the largest finite
// value at the same spacing, frac = (|x| - lo) / (hi - lo), r = (word >> 8) * 2^-24, and the result is
// hi if r < frac, lo otherwise (subnormal grids included: below the smallest normal the spacing is
// that of the lowest normal binade). A result beyond the largest finite value is an overflow:
//   fp16 -> +-Inf (like bf16 above and IEEE);
//   fp8  -> what the round-to-nearest cast of reference/precision/fp8.h gives in the chosen mode:
//           saturate -> +-max finite; non_saturating -> e4m3 NaN (S.1111.111), e5m2 +-Inf.
// So a value between max and the next grid step (e4m3: (448, 480)) rounds to max with probability
// 1 - frac and overflows with probability frac. +-Inf in: fp16 +-Inf; fp8 as the RNE cast (saturate ->
// +-max). NaN in: the RNE cast's NaN (reference/precision/casts.h, reference/precision/fp8.h).
// Zeros keep their sign; every value on the grid comes back exactly whatever the word.
// The word of element `index` is stochastic_rounding_word(seed, tensor_id, index, step), as for bf16.
#pragma once

#include <cstdint>
#include <span>

#include "reference/precision/fp8_format.h"

namespace gauge::reference::precision {

// The random word of (seed, tensor_id, index, step) as defined above.
uint32_t stochastic_rounding_word(uint64_t seed, uint32_t tensor_id, uint64_t index, uint64_t step);

// The rounding above, from a given random word. The fp32 overload is exact; the double overload
// rounds an arbitrary real (the fp64 truth of a stored value) with one stochastic rounding.
uint16_t f32_to_bf16_stochastic(float x, uint32_t word);
uint16_t f64_to_bf16_stochastic(double x, uint32_t word);

// fp16 and fp8 stochastic rounding of an fp32 value with a given word (rule above).
uint16_t f32_to_f16_stochastic(float x, uint32_t word);
uint8_t f32_to_fp8_stochastic(float x, uint32_t word, gauge::precision::Fp8Format format,
                              gauge::precision::Fp8Overflow overflow);

// A whole tensor: element i rounded with stochastic_rounding_word(seed, tensor_id, i, step). Spans of
// equal length (std::invalid_argument otherwise).
void stochastic_round_f32_to_f16(std::span<const float> in, std::span<uint16_t> out, uint64_t seed,
                                 uint32_t tensor_id, uint64_t step);
void stochastic_round_f32_to_fp8(std::span<const float> in, std::span<uint8_t> out, gauge::precision::Fp8Format format,
                                 gauge::precision::Fp8Overflow overflow, uint64_t seed, uint32_t tensor_id,
                                 uint64_t step);

}  // namespace gauge::reference::precision
