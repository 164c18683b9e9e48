#include "reference/precision/gemm.h"

#include <cblas.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <utility>

#include "harness/error.h"
#include "harness/memory.h"
#include "reference/precision/casts.h"
#include "reference/precision/fp8.h"

namespace gauge::reference::precision {
namespace {

Fp8Format fp8_format_of(DType format) {
  switch (format) {
    case DType::e4m3: return Fp8Format::e4m3;
    case DType::e5m2: return Fp8Format::e5m2;
    default: throw UsageError("not an fp8 format: " + std::string(dtype_name(format)));
  }
}

// ---- Decoding operands ------------------------------------------------------------------------------

bool is_gemm_operand_dtype(DType t) {
  switch (t) {
    case DType::f32:
    case DType::tf32:
    case DType::f16:
    case DType::bf16:
    case DType::e4m3:
    case DType::e5m2: return true;
    default: return false;
  }
}

// Exact value of element i; every supported format converts exactly to double (and to float).
double operand_value(const HostTensor& t, size_t i) {
  switch (t.dtype()) {
    case DType::f32:
    case DType::tf32: return static_cast<double>(t.view<float>()[i]);
    case DType::f16: return static_cast<double>(f16_to_f32(t.view<uint16_t>()[i]));
    case DType::bf16: return static_cast<double>(bf16_to_f32(t.view<uint16_t>()[i]));
    case DType::e4m3:
    case DType::e5m2: return static_cast<double>(fp8_to_f32(t.view<uint8_t>()[i], fp8_format_of(t.dtype())));
    default: break;
  }
  throw UsageError("unsupported GEMM operand dtype " + std::string(dtype_name(t.dtype())));
}

template <class T>
mem::HostVector<T> decode(const HostTensor& t) {
  mem::HostVector<T> out(static_cast<size_t>(t.numel()));
  for (size_t i = 0; i < out.size(); ++i) out[i] = static_cast<T>(operand_value(t, i));
  return out;
}

struct Dims {
  int m, n, k;
};

int blas_dim(int64_t v, const char* name) {
  if (v > INT_MAX) throw UsageError(std::string("GEMM dimension ") + name + " = " + std::to_string(v) + " exceeds BLAS's int range");
  return static_cast<int>(v);
}

void check_scale(float scale, const char* name) {
  if (!std::isfinite(scale) || !(scale > 0.0f)) {
    throw UsageError(std::string("GEMM ") + name + " must be finite and positive, got " + std::to_string(scale));
  }
}

// Shapes, dtypes and scales of a reference GEMM; UsageError with one line when they do not fit.
Dims check_operands(const HostTensor& a, const HostTensor& b, float scale_a, float scale_b) {
  for (const HostTensor* t : {&a, &b}) {
    if (!is_gemm_operand_dtype(t->dtype())) {
      throw UsageError("GEMM operand '" + t->name() + "' has unsupported dtype " + std::string(dtype_name(t->dtype())) +
                       " (f32, tf32, f16, bf16, e4m3, e5m2)");
    }
    if (t->shape().size() != 2) {
      throw UsageError("GEMM operand '" + t->name() + "' must be 2-D, got " + shape_string(t->shape()));
    }
  }
  if (a.shape()[1] != b.shape()[1]) {
    throw UsageError("GEMM inner dimensions differ: A " + shape_string(a.shape()) + " is [M,K] but B " +
                     shape_string(b.shape()) + " is [N,K] (D = A B^T)");
  }
  for (const HostTensor* t : {&a, &b}) {
    if (t->dtype() != DType::tf32) continue;
    const auto values = t->view<uint32_t>();
    for (size_t i = 0; i < values.size(); ++i) {
      if ((values[i] & 0x1FFFu) != 0 && (values[i] & 0x7F800000u) != 0x7F800000u) {
        throw UsageError("tf32 operand '" + t->name() + "' element " + std::to_string(i) +
                         " has non-zero low mantissa bits (round it to tf32 first)");
      }
    }
  }
  check_scale(scale_a, "scale_a");
  check_scale(scale_b, "scale_b");
  return {blas_dim(a.shape()[0], "M"), blas_dim(b.shape()[0], "N"), blas_dim(a.shape()[1], "K")};
}

}  // namespace

// ---- Formats ------------------------------------------------------------------------------------------

Fp8Quantized quantize_fp8_pow2(const HostTensor& values, DType format, std::string name) {
  if (values.dtype() != DType::f32) throw UsageError("quantize_fp8_pow2 takes an f32 tensor, got " + std::string(dtype_name(values.dtype())));
  const Fp8Format fp8 = fp8_format_of(format);
  const auto x = values.view<float>();
  double amax = 0.0;
  for (const float v : x) {
    if (std::isfinite(v)) amax = std::max(amax, std::fabs(static_cast<double>(v)));
  }
  int scale_exponent = 0;
  if (amax > 0.0) scale_exponent = static_cast<int>(std::floor(std::log2(fp8_max_finite(fp8) / amax)));
  Fp8Quantized out{HostTensor(std::move(name), format, values.shape()), std::ldexp(1.0f, -scale_exponent)};
  auto q = out.values.view<uint8_t>();
  // x * 2^e is exact in fp32 (a power-of-two scaling far from fp32's range limits).
  for (size_t i = 0; i < q.size(); ++i) q[i] = f32_to_fp8(std::ldexp(x[i], scale_exponent), fp8, Fp8Overflow::saturate);
  return out;
}

HostTensor round_f32_tensor(const HostTensor& values, DType format, std::string name) {
  if (values.dtype() != DType::f32) throw UsageError("round_f32_tensor takes an f32 tensor, got " + std::string(dtype_name(values.dtype())));
  HostTensor out(std::move(name), format, values.shape());
  const auto x = values.view<float>();
  switch (format) {
    case DType::f32: std::copy(x.begin(), x.end(), out.view<float>().begin()); break;
    case DType::tf32: {
      auto y = out.view<float>();
      for (size_t i = 0; i < x.size(); ++i) y[i] = f32_to_tf32(x[i]);
      break;
    }
    case DType::f16: cast_f32_to_f16(x, out.view<uint16_t>()); break;
    case DType::bf16: cast_f32_to_bf16(x, out.view<uint16_t>()); break;
    default: throw UsageError("round_f32_tensor: unsupported format " + std::string(dtype_name(format)));
  }
  return out;
}

// ---- GEMMs ----------------------------------------------------------------------------------------------

HostTensor gemm_truth(const HostTensor& a, const HostTensor& b, float scale_a, float scale_b, std::string name) {
  const Dims d = check_operands(a, b, scale_a, scale_b);
  HostTensor out(std::move(name), DType::f64, {a.shape()[0], b.shape()[0]});
  const mem::HostVector<double> a64 = decode<double>(a);
  const mem::HostVector<double> b64 = decode<double>(b);
  // The scales are applied as dgemm's alpha: one fp64 rounding (none for powers of two).
  const double alpha = static_cast<double>(scale_a) * static_cast<double>(scale_b);
  cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, d.m, d.n, d.k, alpha, a64.data(), d.k, b64.data(), d.k, 0.0,
              out.view<double>().data(), d.n);
  return out;
}

HostTensor gemm_faithful(const HostTensor& a, const HostTensor& b, DType out_dtype, float scale_a, float scale_b,
                         std::string name) {
  const Dims d = check_operands(a, b, scale_a, scale_b);
  if (out_dtype != DType::f32 && out_dtype != DType::bf16 && out_dtype != DType::f16) {
    throw UsageError("GEMM output dtype must be f32, bf16 or f16, got " + std::string(dtype_name(out_dtype)));
  }
  HostTensor out(std::move(name), out_dtype, {a.shape()[0], b.shape()[0]});
  // tf32 operands are tf32-exact (checked above), so "round the operands to tf32" leaves them as
  // they are; every other format converts to fp32 exactly.
  const mem::HostVector<float> a32 = decode<float>(a);
  const mem::HostVector<float> b32 = decode<float>(b);
  mem::HostVector<float> accumulator;
  float* sums = nullptr;
  if (out_dtype == DType::f32) {
    sums = out.view<float>().data();
  } else {
    accumulator.resize(static_cast<size_t>(out.numel()));
    sums = accumulator.data();
  }
  // fp32 products summed in fp32 (sgemm's FMA accumulation).
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, d.m, d.n, d.k, 1.0f, a32.data(), d.k, b32.data(), d.k, 0.0f, sums,
              d.n);
  const float scale = scale_a * scale_b;
  const size_t count = static_cast<size_t>(out.numel());
  if (scale != 1.0f) {
    for (size_t i = 0; i < count; ++i) sums[i] *= scale;
  }
  if (out_dtype == DType::bf16) cast_f32_to_bf16({sums, count}, out.view<uint16_t>());
  if (out_dtype == DType::f16) cast_f32_to_f16({sums, count}, out.view<uint16_t>());
  return out;
}

}  // namespace gauge::reference::precision
