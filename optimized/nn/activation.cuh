// Internal to optimized/nn: the activations and their derivatives in fp32 (pointwise.cu). gelu_tanh and
// silu are written as z * sigmoid(a) with the sigmoid evaluated from exp of a non-positive argument,
// so no step cancels: 0.5 z (1 + tanh(u)) = z sigmoid(2u), and 1 + tanh(u) would lose every digit
// for negative z. Error (relative, in u = 2^-24; expf is 2 ulp = at most 4 u per the CUDA Programming
// Guide's single-precision function table, +, *, / are correctly rounded, 1 u each):
//   silu:  expf 4 + add 1 + div 1 + mul 1                                 = 7 u
//   gelu:  the same 7 u, plus the argument a = z (k2 + kc2 z^2): 5 roundings (the two constants, z^2,
//          the fma, the product) = 5 u relative in a, which exp turns into 5 |a| u relative in the
//          sigmoid on the negative side (a <= 11 for |z| <= 4: 55 u)         = 62 u
// suites/nn/cases.cc turns these into ULP rules (plus the reference's own rounding).
#pragma once

#include <cuda_runtime.h>

#include "reference/nn/layers.h"  // the Activation enum

namespace gauge::optimized::nn::detail {

using gauge::reference::nn::Activation;

// 2 sqrt(2/pi) and 2 sqrt(2/pi) 0.044715, rounded to fp32.
constexpr float kGeluK2 = 1.5957691216057308f;
constexpr float kGeluKc2 = 0.07135481627159979f;

struct Sigmoid {
  float s;            // sigmoid(a)
  float one_minus_s;  // 1 - sigmoid(a), without cancellation
};

__device__ __forceinline__ Sigmoid sigmoid(float a) {
  const float e = expf(-fabsf(a));  // in (0, 1]: never overflows
  const float r = 1.0f / (1.0f + e);
  const float small = e * r;  // sigmoid(-|a|)
  return a >= 0.0f ? Sigmoid{r, small} : Sigmoid{small, r};
}

__device__ __forceinline__ float gelu_argument(float z) { return z * fmaf(kGeluKc2, z * z, kGeluK2); }

template <Activation A>
__device__ __forceinline__ float activate(float z) {
  if constexpr (A == Activation::relu) {
    return (z > 0.0f || z != z) ? z : 0.0f;  // NaN propagates, -0 -> +0 (reference/nn/layers.cc)
  } else if constexpr (A == Activation::silu) {
    return z * sigmoid(z).s;
  } else {
    return z * sigmoid(gelu_argument(z)).s;
  }
}

template <Activation A>
__device__ __forceinline__ float derivative(float z) {
  if constexpr (A == Activation::relu) {
    return z > 0.0f ? 1.0f : (z != z ? z : 0.0f);
  } else if constexpr (A == Activation::silu) {
    // s (1 + z (1 - s))
    const Sigmoid g = sigmoid(z);
    return g.s * fmaf(z, g.one_minus_s, 1.0f);
  } else {
    // d/dz z s(a(z)) = s + z s (1 - s) a'(z),  a' = k2 + 3 kc2 z^2
    const Sigmoid g = sigmoid(gelu_argument(z));
    const float slope = fmaf(3.0f * kGeluKc2, z * z, kGeluK2);
    return fmaf(z * g.s, g.one_minus_s * slope, g.s);
  }
}

}  // namespace gauge::optimized::nn::detail
