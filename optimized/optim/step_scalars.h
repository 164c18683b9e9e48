// The per-step scalars of the update kernels, computed in double and rounded once to fp32. Plain C++
// (the CPU tests and the GPU test's emulator use the very same functions); the step-dependent part is
// also GAUGE_HOST_DEVICE, because StepPlan::step_counted computes it on the device, in the norm
// pre-pass, for a step number that only the device knows. One function serves both sides, so the
// host and device scalars cannot drift apart.
#pragma once

#include <cmath>
#include <cstdint>

#include "optimized/optim/multi_tensor.h"
#include "reference/optim/config.h"

// __host__ __device__ under nvcc; nothing for a plain C++ compiler (this header stays includable by
// host-only code and the CPU tests).
#if !defined(GAUGE_HOST_DEVICE)
#if defined(__CUDACC__)
#define GAUGE_HOST_DEVICE __host__ __device__
#else
#define GAUGE_HOST_DEVICE
#endif
#endif

namespace gauge::optimized::optim {

struct StepScalars {
  float lr = 0;
  float weight_decay = 0;
  float eps = 0;
  // SGD / RMSprop momentum
  float momentum = 0;
  float dampening_complement = 1;  // 1 - dampening
  // AdaGrad: lr / (1 + (t - 1) lr_decay)
  float clr = 0;
  // RMSprop
  float alpha = 0;
  float one_minus_alpha = 0;
  // Adam / AdamW
  float beta1 = 0;
  float one_minus_beta1 = 0;
  float beta2 = 0;
  float one_minus_beta2 = 0;
  float step_size = 0;     // lr / (1 - b1^t)
  float bc2_sqrt = 1;      // sqrt(1 - b2^t)
  float decay_factor = 1;  // AdamW: 1 - lr wd
  // Launch-uniform switches (never per-element decisions).
  int use_weight_decay = 0;  // weight_decay != 0 (PyTorch skips the term entirely otherwise)
  int use_momentum = 0;      // SGD: momentum != 0; RMSprop: momentum > 0
  int nesterov = 0;
  int first_step = 0;  // SGD: step == 1, the momentum buffer is set to the gradient
  int centered = 0;
  int amsgrad = 0;
  int decoupled = 0;       // AdamW
  int momentum_slot = -1;  // RMSprop state slots
  int grad_avg_slot = -1;
};

// ---- The step-dependent part -------------------------------------------------------------------
// Everything of StepScalars that depends on the step number t: SGD's first_step, AdaGrad's clr and
// Adam(W)'s step_size and bc2_sqrt (the fourth, the stochastic-rounding keys' step number, is t
// itself). RMSprop has none.

// What those scalars depend on besides t: fixed for one plan and one learning rate (a plain struct,
// a kernel parameter of the counted pre-pass).
struct StepDependence {
  gauge::optim::Algorithm algorithm = gauge::optim::Algorithm::sgd;
  double lr = 0;
  double lr_decay = 0;  // AdaGrad
  double beta1 = 0;     // Adam / AdamW
  double beta2 = 0;
};

inline StepDependence step_dependence(const gauge::optim::Hyper& h, double lr) {
  StepDependence d;
  d.algorithm = h.algorithm;
  d.lr = lr;
  d.lr_decay = h.lr_decay;
  d.beta1 = h.beta1;
  d.beta2 = h.beta2;
  return d;
}

struct StepDependentScalars {
  float clr = 0;           // AdaGrad
  float step_size = 0;     // Adam / AdamW
  float bc2_sqrt = 1;      // Adam / AdamW
  int32_t first_step = 0;  // SGD
};

namespace step_math {
// Double arithmetic spelled out so that the device cannot contract a * b + c into an FMA (nvcc
// contracts double arithmetic by default; the host evaluates each operation rounded).
GAUGE_HOST_DEVICE inline double mul_rn(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dmul_rn(a, b);
#else
  return a * b;
#endif
}
GAUGE_HOST_DEVICE inline double add_rn(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dadd_rn(a, b);
#else
  return a + b;
#endif
}
GAUGE_HOST_DEVICE inline double sub_rn(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __dsub_rn(a, b);
#else
  return a - b;
#endif
}
GAUGE_HOST_DEVICE inline double div_rn(double a, double b) {
#if defined(__CUDA_ARCH__)
  return __ddiv_rn(a, b);
#else
  return a / b;
#endif
}
GAUGE_HOST_DEVICE inline double sqrt_rn(double x) {
#if defined(__CUDA_ARCH__)
  return __dsqrt_rn(x);
#else
  return std::sqrt(x);
#endif
}
// The one operation that is not correctly rounded on both sides: CUDA documents its double pow at 2
// ulp, glibc's is within about half an ulp, so b^t may differ by an ulp or two of double. 1 - b^t
// then carries an absolute error of ~2^-52 (relative 2^-52 / (1 - b^t), at most ~2^-42 for
// b = 0.999 at t = 1), far below fp32's 2^-24: after the single rounding to fp32 the two sides give
// the same scalar unless the double lies within that error of an fp32 rounding tie (a chance of
// roughly 2^-18 or less per scalar), and then they differ by 1 fp32 ulp of the scalar. The optimizer
// rules compare with ulp bounds anyway; the GPU test checks its own (t, beta) values bit for bit.
GAUGE_HOST_DEVICE inline double pow(double x, double y) {
#if defined(__CUDA_ARCH__)
  return ::pow(x, y);
#else
  return std::pow(x, y);
#endif
}
}  // namespace step_math

// t >= 1. Each value in double, rounded once to fp32 (the expressions StepPlan has always used:
// step_scalars below is built on this function).
GAUGE_HOST_DEVICE inline StepDependentScalars step_dependent_scalars(const StepDependence& d, int64_t step) {
  using gauge::optim::Algorithm;
  namespace m = step_math;
  StepDependentScalars s;
  const double t = static_cast<double>(step);
  switch (d.algorithm) {
    case Algorithm::sgd:
      s.first_step = step == 1 ? 1 : 0;
      break;
    case Algorithm::adagrad:
      s.clr = static_cast<float>(m::div_rn(d.lr, m::add_rn(1.0, m::mul_rn(m::sub_rn(t, 1.0), d.lr_decay))));
      break;
    case Algorithm::rmsprop:
      break;
    case Algorithm::adam:
    case Algorithm::adamw: {
      const double bc1 = m::sub_rn(1.0, m::pow(d.beta1, t));
      const double bc2 = m::sub_rn(1.0, m::pow(d.beta2, t));
      s.step_size = static_cast<float>(m::div_rn(d.lr, bc1));
      s.bc2_sqrt = static_cast<float>(m::sqrt_rn(bc2));
      break;
    }
  }
  return s;
}

// Puts the step-dependent values into a StepScalars (host step_scalars; the counted update kernel).
GAUGE_HOST_DEVICE inline void set_step_dependent(StepScalars& s, const StepDependentScalars& d) {
  s.clr = d.clr;
  s.step_size = d.step_size;
  s.bc2_sqrt = d.bc2_sqrt;
  s.first_step = d.first_step;
}

// The host step's scalars: the step-independent ones here, the step-dependent ones from
// step_dependent_scalars.
inline StepScalars step_scalars(const gauge::optim::Hyper& h, int64_t step, double lr) {
  using gauge::optim::Algorithm;
  StepScalars s;
  const auto f = [](double x) { return static_cast<float>(x); };
  s.lr = f(lr);
  s.weight_decay = f(h.weight_decay);
  s.use_weight_decay = h.weight_decay != 0.0 ? 1 : 0;
  s.eps = f(h.eps);
  const StateIndex slots = state_index(h);
  switch (h.algorithm) {
    case Algorithm::sgd:
      s.momentum = f(h.momentum);
      s.dampening_complement = f(1.0 - h.dampening);
      s.use_momentum = h.momentum != 0.0 ? 1 : 0;
      s.nesterov = h.nesterov ? 1 : 0;
      break;
    case Algorithm::adagrad:
      break;
    case Algorithm::rmsprop:
      s.alpha = f(h.alpha);
      s.one_minus_alpha = f(1.0 - h.alpha);
      s.momentum = f(h.momentum);
      s.use_momentum = h.momentum > 0.0 ? 1 : 0;
      s.centered = h.centered ? 1 : 0;
      s.momentum_slot = slots.momentum_buffer;
      s.grad_avg_slot = slots.grad_avg;
      break;
    case Algorithm::adam:
    case Algorithm::adamw:
      s.beta1 = f(h.beta1);
      s.one_minus_beta1 = f(1.0 - h.beta1);
      s.beta2 = f(h.beta2);
      s.one_minus_beta2 = f(1.0 - h.beta2);
      s.amsgrad = h.amsgrad ? 1 : 0;
      s.decoupled = h.algorithm == Algorithm::adamw ? 1 : 0;
      s.decay_factor = f(1.0 - lr * h.weight_decay);
      break;
  }
  set_step_dependent(s, step_dependent_scalars(step_dependence(h, lr), step));
  return s;
}

}  // namespace gauge::optimized::optim
