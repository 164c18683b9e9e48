// Element formats known to the harness, and the facts about each one that the comparison and
// tolerance modules need. The harness decodes stored bits to double here on its own: the reference
// and optimized sides each carry their own conversion code, and this third copy only reads values.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace gauge {

enum class DType : uint8_t {
  f64,
  f32,
  tf32,  // stored as fp32 bits whose low 13 mantissa bits are zero
  f16,
  bf16,
  e4m3,  // OCP fp8 E4M3 "fn": bias 7, max 448, no Inf, NaN = S.1111.111
  e5m2,  // OCP fp8 E5M2: bias 15, max 57344, IEEE-like Inf/NaN
  u8,
  u16,
  u32,
  i32,
  i64,
};

std::string_view dtype_name(DType t);
std::optional<DType> parse_dtype(std::string_view name);
size_t dtype_size(DType t);
bool is_floating(DType t);
// Unit round-off u = 2^-(p) where p is the number of stored mantissa bits plus one, halved:
// fp32 2^-24, tf32 2^-11, fp16 2^-11, bf16 2^-8, e4m3 2^-4, e5m2 2^-3; 0 for integers and f64 2^-53.
double unit_roundoff(DType t);
// Largest finite value of a floating format.
double max_finite(DType t);

// Reads element i of a buffer of dtype t as a double (integers convert exactly up to 2^53).
double load_as_double(DType t, const void* data, size_t i);
// Raw bits of element i, zero-extended (for float formats: the stored pattern).
uint64_t load_bits(DType t, const void* data, size_t i);

enum class FloatClass : uint8_t { zero, subnormal, normal, infinite, nan };
FloatClass classify_bits(DType t, uint64_t bits);

// Signed position of a float bit pattern on the number line counted in ULPs: +0 and -0 are both 0,
// the smallest positive subnormal 1, and so on; so |ordinal(a) - ordinal(b)| is the ULP distance.
// Not meaningful for NaN. Integers return their value.
int64_t ulp_ordinal(DType t, uint64_t bits);

}  // namespace gauge
