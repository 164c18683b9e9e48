// Reference GEMM in every precision: the fp64 truth and the faithful low-precision reference.
//
// Layout (the same as optimized/precision/gemm_problem.h): A row-major [M, K], B row-major [N, K],
//   D[m][n] = scale_a * scale_b * sum_k A[m][k] * B[n][k]          (D = A Bᵀ, row-major [M, N])
// Operands are tensors of any of f32, tf32, f16, bf16, e4m3, e5m2 (narrow formats as raw bits);
// scale_a / scale_b are the per-tensor dequantization scales of fp8 operands (1 for the others).
//
// - gemm_truth: every operand decoded exactly to double, products summed in fp64 (cblas_dgemm), the
//   scales applied in fp64. An f64 [M, N] tensor.
// - gemm_faithful: what a straightforward low-precision GEMM computes: the operands as stored
//   (tf32 operands rounded to tf32 first, round to nearest even), products summed in fp32
//   (cblas_sgemm), multiplied by the fp32 product of the scales, rounded once to `out` (f32, bf16 or
//   f16, round to nearest even via reference/precision/casts.h).
//
// Operands are decoded with the reference conversions (reference/precision/fp8.h for e4m3 / e5m2,
// casts.h for f16 / bf16), all exact.
#pragma once

#include <cstdint>
#include <string>

#include "harness/dtype.h"
#include "harness/tensor.h"

namespace gauge::reference::precision {

HostTensor gemm_truth(const HostTensor& a, const HostTensor& b, float scale_a = 1.0f, float scale_b = 1.0f,
                      std::string name = "d");
HostTensor gemm_faithful(const HostTensor& a, const HostTensor& b, DType out, float scale_a = 1.0f,
                         float scale_b = 1.0f, std::string name = "d");

// ---- Formats the GEMM inputs are made in (conversions: reference/precision/fp8.h, casts.h) -----

// Per-tensor fp8 quantization with a power-of-two scale: s = 2^floor(log2(max_finite / amax)), so the
// largest |x| lands in the top binade without overflow and dequantizing (x_q / s) is exact in any
// binary format; x * s is rounded to nearest even (saturating) by f32_to_fp8. `values` are fp32;
// returns the quantized tensor and the dequantization scale 1 / s. `format`: e4m3 or e5m2.
struct Fp8Quantized {
  HostTensor values;
  float dequant_scale = 1.0f;
};
Fp8Quantized quantize_fp8_pow2(const HostTensor& values, DType format, std::string name);

// An fp32 tensor rounded to `format` (f32, tf32, f16, bf16) by the reference casts (tf32: f32_to_tf32,
// round to nearest even).
HostTensor round_f32_tensor(const HostTensor& values, DType format, std::string name);

}  // namespace gauge::reference::precision
