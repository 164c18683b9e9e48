// What a gauge GEMM is, which dtype combinations the optimized side supports, and how gauge's
// row-major layout maps onto cuBLASLt's column-major one. Plain C++ (no CUDA headers): the case
// declarations, the CPU tests and optimized/precision/gemm.cu all use it.
//
// Layout convention ("TN", the layout of a linear layer, D = X Wᵀ):
//   A: row-major [M, K]    B: row-major [N, K]    D: row-major [M, N]
//   D[m][n] = scale_a * scale_b * sum_k A[m][k] * B[n][k]
// Both operands are K-major, which is what cuBLASLt's fp8 kernels require. scale_a / scale_b are the
// per-tensor dequantization scales of fp8 operands (A and B hold x / scale_x quantized); 1 otherwise.
#pragma once

#include <cstdint>
#include <string>

#include "harness/dtype.h"
#include "harness/error.h"
#include "harness/tensor.h"

namespace gauge::optimized::precision {

struct GemmShape {
  int64_t m = 0;
  int64_t n = 0;
  int64_t k = 0;
};

struct GemmTypes {
  DType a = DType::f32;
  DType b = DType::f32;
  DType out = DType::f32;
  // fp8 only: cuBLASLt's FAST_ACCUM. Off, the tensor cores' partial sums are promoted to fp32 at
  // intervals; on, they stay in the tensor cores' narrower accumulator for the whole K loop (faster,
  // less accurate: the case's tolerance says by how much).
  bool fp8_fast_accumulation = false;
};

// How the products are formed and summed on the device.
enum class GemmMath : uint8_t {
  f32_fma,      // fp32 inputs, fp32 FMA accumulation (no tensor cores)
  tf32_tensor,  // tf32 operands on tensor cores, fp32 accumulator
  f16_tensor,   // fp16 operands, fp32 accumulator
  bf16_tensor,  // bf16 operands, fp32 accumulator
  fp8_tensor,   // e4m3 / e5m2 operands, fp32 accumulator, per-tensor scales
};

inline bool is_fp8(DType t) { return t == DType::e4m3 || t == DType::e5m2; }

inline std::string describe_gemm(const GemmShape& s, const GemmTypes& t) {
  return "M=" + std::to_string(s.m) + " N=" + std::to_string(s.n) + " K=" + std::to_string(s.k) + " " +
         std::string(dtype_name(t.a)) + " x " + std::string(dtype_name(t.b)) + " -> " +
         std::string(dtype_name(t.out)) + (t.fp8_fast_accumulation ? " (fast accumulation)" : "");
}

// The supported combinations, or UsageError with one line:
//   f32 x f32 -> f32 (FMA); tf32 x tf32 -> f32; f16 x f16 -> f16 | f32; bf16 x bf16 -> bf16 | f32;
//   {e4m3, e5m2} x {e4m3, e5m2} except e5m2 x e5m2 -> bf16 | f16 | f32, with M, N, K multiples of 16.
inline GemmMath validate_gemm(const GemmShape& s, const GemmTypes& t) {
  if (s.m <= 0 || s.n <= 0 || s.k <= 0) {
    throw UsageError("GEMM dimensions must be positive, got " + describe_gemm(s, t));
  }
  const auto unsupported = [&]() {
    return UsageError("unsupported GEMM dtypes " + describe_gemm(s, t) +
                      " (supported: f32 x f32 -> f32, tf32 x tf32 -> f32, f16 x f16 -> f16|f32, bf16 x bf16 -> "
                      "bf16|f32, fp8 (e4m3 x e4m3, e4m3 x e5m2, e5m2 x e4m3) -> bf16|f16|f32)");
  };
  if (t.fp8_fast_accumulation && !(is_fp8(t.a) && is_fp8(t.b))) {
    throw UsageError("fast accumulation applies to fp8 GEMMs only, not " + describe_gemm(s, t));
  }
  if (is_fp8(t.a) && is_fp8(t.b)) {
    if (t.a == DType::e5m2 && t.b == DType::e5m2) {
      throw UsageError("e5m2 x e5m2 GEMM is not supported (cuBLASLt's fp8 kernels need an e4m3 operand): " +
                       describe_gemm(s, t));
    }
    if (t.out != DType::bf16 && t.out != DType::f16 && t.out != DType::f32) throw unsupported();
    if (s.m % 16 != 0 || s.n % 16 != 0 || s.k % 16 != 0) {
      throw UsageError("fp8 GEMM needs M, N and K to be multiples of 16 (cuBLASLt's fp8 alignment), got " +
                       describe_gemm(s, t));
    }
    return GemmMath::fp8_tensor;
  }
  if (t.a != t.b) throw unsupported();
  switch (t.a) {
    case DType::f32:
      if (t.out == DType::f32) return GemmMath::f32_fma;
      break;
    case DType::tf32:
      if (t.out == DType::f32) return GemmMath::tf32_tensor;
      break;
    case DType::f16:
      if (t.out == DType::f16 || t.out == DType::f32) return GemmMath::f16_tensor;
      break;
    case DType::bf16:
      if (t.out == DType::bf16 || t.out == DType::f32) return GemmMath::bf16_tensor;
      break;
    default: break;
  }
  throw unsupported();
}

// The GEMM of tensors A [M, K], B [N, K], D [M, N]; UsageError when the shapes do not fit together.
inline GemmShape gemm_shape_of(const Shape& a, const Shape& b, const Shape& d) {
  if (a.size() != 2 || b.size() != 2 || d.size() != 2) {
    throw UsageError("GEMM operands must be 2-D (A [M,K], B [N,K], D [M,N]), got A " + shape_string(a) + ", B " +
                     shape_string(b) + ", D " + shape_string(d));
  }
  if (a[1] != b[1]) {
    throw UsageError("GEMM inner dimensions differ: A " + shape_string(a) + " is [M,K] but B " + shape_string(b) +
                     " is [N,K] (D = A B^T)");
  }
  if (d[0] != a[0] || d[1] != b[0]) {
    throw UsageError("GEMM output D " + shape_string(d) + " must be [M,N] = [" + std::to_string(a[0]) + ", " +
                     std::to_string(b[0]) + "] for A " + shape_string(a) + " and B " + shape_string(b));
  }
  return {a[0], b[0], a[1]};
}

// Empty when the device can run the GEMM's math; otherwise the one-line reason.
inline std::string gemm_device_unsupported_reason(GemmMath math, int cc_major, int cc_minor) {
  const int cc = cc_major * 10 + cc_minor;
  if (math == GemmMath::fp8_tensor && cc < 89) {
    return "fp8 GEMM needs compute capability 8.9+ (this device is " + std::to_string(cc_major) + "." +
           std::to_string(cc_minor) + ")";
  }
  if (math != GemmMath::f32_fma && cc < 80) {
    return "tf32 / fp16 / bf16 tensor-core GEMM with fp32 accumulation needs compute capability 8.0+ (this device is " +
           std::to_string(cc_major) + "." + std::to_string(cc_minor) + ")";
  }
  return {};
}

// ---- Row-major gauge -> column-major cuBLASLt ------------------------------------------------------
//
// A row-major [r, c] matrix with row stride c is, to a column-major library, the [c, r] matrix with
// leading dimension c: the same bytes, transposed. So gauge's D[M,N] = A[M,K] B[N,K]ᵀ is, column-major,
//   Dᵀ (N x M) = B (N x K) Aᵀ (K x M)
// where B's buffer reads as the column-major K x N matrix (ld K) used transposed, and A's buffer as the
// column-major K x M matrix (ld K) used as is. cuBLASLt's A operand is gauge's B (op = T) and its B
// operand is gauge's A (op = N): the "TN" form cuBLASLt's fp8 kernels require. For fp8 the scales
// follow their operands: cuBLASLt's A scale is gauge's scale_b and its B scale gauge's scale_a.

struct LtMatrix {
  DType dtype = DType::f32;
  uint64_t rows = 0;  // column-major
  uint64_t cols = 0;
  int64_t ld = 0;
};

struct LtGemm {
  uint64_t m = 0, n = 0, k = 0;  // cuBLASLt's problem: (m x k) op(A) times (k x n) op(B)
  bool transpose_a = true;       // op(A) = Aᵀ
  bool transpose_b = false;
  LtMatrix a;  // gauge's B buffer
  LtMatrix b;  // gauge's A buffer
  LtMatrix d;  // gauge's D buffer (also C, with beta = 0)
};

inline LtGemm lt_gemm(const GemmShape& s, const GemmTypes& t) {
  const auto m = static_cast<uint64_t>(s.m), n = static_cast<uint64_t>(s.n), k = static_cast<uint64_t>(s.k);
  LtGemm g;
  g.m = n;
  g.n = m;
  g.k = k;
  g.a = {t.b, k, n, s.k};
  g.b = {t.a, k, m, s.k};
  g.d = {t.out, n, m, s.n};
  return g;
}

}  // namespace gauge::optimized::precision
