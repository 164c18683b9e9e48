#include "harness/dtype.h"

#include <bit>
#include <cmath>
#include <cstring>
#include <limits>

namespace gauge {

namespace {

struct FloatLayout {
  int exponent_bits;
  int mantissa_bits;
  int bias;
  bool has_infinity;        // e4m3 "fn" has none
  bool nan_only_all_ones;   // e4m3: only S.1111.111 is NaN
};

FloatLayout layout_of(DType t) {
  switch (t) {
    case DType::f64: return {11, 52, 1023, true, false};
    case DType::f32:
    case DType::tf32: return {8, 23, 127, true, false};
    case DType::f16: return {5, 10, 15, true, false};
    case DType::bf16: return {8, 7, 127, true, false};
    case DType::e4m3: return {4, 3, 7, false, true};
    case DType::e5m2: return {5, 2, 15, true, false};
    default: return {0, 0, 0, false, false};
  }
}

int storage_bits(DType t) { return static_cast<int>(dtype_size(t) * 8); }

}  // namespace

std::string_view dtype_name(DType t) {
  switch (t) {
    case DType::f64: return "f64";
    case DType::f32: return "f32";
    case DType::tf32: return "tf32";
    case DType::f16: return "f16";
    case DType::bf16: return "bf16";
    case DType::e4m3: return "e4m3";
    case DType::e5m2: return "e5m2";
    case DType::u8: return "u8";
    case DType::u16: return "u16";
    case DType::u32: return "u32";
    case DType::i32: return "i32";
    case DType::i64: return "i64";
  }
  return "?";
}

std::optional<DType> parse_dtype(std::string_view name) {
  for (DType t : {DType::f64, DType::f32, DType::tf32, DType::f16, DType::bf16, DType::e4m3, DType::e5m2,
                  DType::u8, DType::u16, DType::u32, DType::i32, DType::i64}) {
    if (dtype_name(t) == name) return t;
  }
  if (name == "fp32" || name == "float32") return DType::f32;
  if (name == "fp16" || name == "float16") return DType::f16;
  if (name == "fp64" || name == "float64") return DType::f64;
  return std::nullopt;
}

size_t dtype_size(DType t) {
  switch (t) {
    case DType::f64:
    case DType::i64: return 8;
    case DType::f32:
    case DType::tf32:
    case DType::u32:
    case DType::i32: return 4;
    case DType::f16:
    case DType::bf16:
    case DType::u16: return 2;
    case DType::e4m3:
    case DType::e5m2:
    case DType::u8: return 1;
  }
  return 0;
}

bool is_floating(DType t) { return layout_of(t).mantissa_bits > 0; }

double unit_roundoff(DType t) {
  switch (t) {
    case DType::tf32: return std::ldexp(1.0, -11);  // 10 stored mantissa bits, like fp16
    default: break;
  }
  const FloatLayout l = layout_of(t);
  if (l.mantissa_bits == 0) return 0.0;
  return std::ldexp(1.0, -(l.mantissa_bits + 1));
}

double max_finite(DType t) {
  switch (t) {
    case DType::f64: return std::numeric_limits<double>::max();
    case DType::f32:
    case DType::tf32: return static_cast<double>(std::numeric_limits<float>::max());
    case DType::f16: return 65504.0;
    case DType::bf16: return 0x1.FEp127;
    case DType::e4m3: return 448.0;
    case DType::e5m2: return 57344.0;
    default: return 0.0;
  }
}

uint64_t load_bits(DType t, const void* data, size_t i) {
  const auto* bytes = static_cast<const unsigned char*>(data) + i * dtype_size(t);
  switch (dtype_size(t)) {
    case 1: return bytes[0];
    case 2: {
      uint16_t v;
      std::memcpy(&v, bytes, 2);
      return v;
    }
    case 4: {
      uint32_t v;
      std::memcpy(&v, bytes, 4);
      return v;
    }
    default: {
      uint64_t v;
      std::memcpy(&v, bytes, 8);
      return v;
    }
  }
}

FloatClass classify_bits(DType t, uint64_t bits) {
  const FloatLayout l = layout_of(t);
  const int total = storage_bits(t);
  const uint64_t mantissa = bits & ((uint64_t{1} << l.mantissa_bits) - 1);
  const uint64_t exponent = (bits >> l.mantissa_bits) & ((uint64_t{1} << l.exponent_bits) - 1);
  const uint64_t exponent_all_ones = (uint64_t{1} << l.exponent_bits) - 1;
  (void)total;
  if (l.nan_only_all_ones) {
    if (exponent == exponent_all_ones && mantissa == (uint64_t{1} << l.mantissa_bits) - 1) return FloatClass::nan;
  } else if (exponent == exponent_all_ones) {
    return mantissa == 0 ? FloatClass::infinite : FloatClass::nan;
  }
  if (exponent == 0) return mantissa == 0 ? FloatClass::zero : FloatClass::subnormal;
  return FloatClass::normal;
}

double load_as_double(DType t, const void* data, size_t i) {
  const uint64_t bits = load_bits(t, data, i);
  switch (t) {
    case DType::f64: return std::bit_cast<double>(bits);
    case DType::f32:
    case DType::tf32: return static_cast<double>(std::bit_cast<float>(static_cast<uint32_t>(bits)));
    case DType::u8:
    case DType::u16:
    case DType::u32: return static_cast<double>(bits);
    case DType::i32: return static_cast<double>(static_cast<int32_t>(static_cast<uint32_t>(bits)));
    case DType::i64: return static_cast<double>(static_cast<int64_t>(bits));
    default: break;
  }
  // The narrow formats, read field by field.
  const FloatLayout l = layout_of(t);
  const int total = storage_bits(t);
  const bool negative = (bits >> (total - 1)) & 1u;
  const uint64_t mantissa = bits & ((uint64_t{1} << l.mantissa_bits) - 1);
  const int exponent = static_cast<int>((bits >> l.mantissa_bits) & ((uint64_t{1} << l.exponent_bits) - 1));
  double magnitude = 0.0;
  switch (classify_bits(t, bits)) {
    case FloatClass::nan: return std::numeric_limits<double>::quiet_NaN();
    case FloatClass::infinite: magnitude = std::numeric_limits<double>::infinity(); break;
    case FloatClass::zero: magnitude = 0.0; break;
    case FloatClass::subnormal:
      magnitude = std::ldexp(static_cast<double>(mantissa), 1 - l.bias - l.mantissa_bits);
      break;
    case FloatClass::normal:
      magnitude = std::ldexp(static_cast<double>(mantissa + (uint64_t{1} << l.mantissa_bits)),
                             exponent - l.bias - l.mantissa_bits);
      break;
  }
  return negative ? -magnitude : magnitude;
}

int64_t ulp_ordinal(DType t, uint64_t bits) {
  if (!is_floating(t)) {
    if (t == DType::i32) return static_cast<int32_t>(static_cast<uint32_t>(bits));
    return static_cast<int64_t>(bits);
  }
  const int total = storage_bits(t);
  const uint64_t sign_bit = uint64_t{1} << (total - 1);
  const int64_t magnitude = static_cast<int64_t>(bits & (sign_bit - 1));
  return (bits & sign_bit) ? -magnitude : magnitude;
}

}  // namespace gauge
