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
#pragma once

#include <cstdint>

namespace gauge::reference::precision {

// The random word of (seed, tensor_id, index, step) as defined above.
uint32_t stochastic_rounding_word(uint64_t seed, uint32_t tensor_id, uint64_t index, uint64_t step);

// The rounding above, from a given random word. The fp32 overload is exact; the double overload
// rounds an arbitrary real (the fp64 truth of a stored value) with one stochastic rounding.
uint16_t f32_to_bf16_stochastic(float x, uint32_t word);
uint16_t f64_to_bf16_stochastic(double x, uint32_t word);

}  // namespace gauge::reference::precision
