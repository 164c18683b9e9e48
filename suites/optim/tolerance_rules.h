// Tolerance rules of the optim suite, derived from unit round-off and the operations of each update
// (never chosen to make a comparison pass). Built from harness/tolerance.h's factories.
//
// fp32 (the optimized side computes in fp32; the reference computes in double and rounds each stored
// value once per step). Why not "k ulp per step" on each value: a ULP distance is relative to the
// value, and optimizer values cross zero (a parameter p - lr * d landing near 0, a momentum buffer of
// alternating gradients): there a difference of u * |terms| is any number of ulps of the tiny result.
// What holds is an absolute bound at the scale of the terms, i.e. "k roundings per step at magnitude
// M". fp32_error_budget propagates, step by step and to first order in u, a bound E_x(t) on
// |optimized - reference| for every stored quantity x:
//   E_x(t) = (propagated: sum over inputs y of x's update of L_xy * E_y(t-1))
//          + (fresh: each fp32 operation of the update rounds with |error| <= u |its result|, its
//             result bounded by the magnitude bounds below: add, subtract, multiply, IEEE divide and
//             square root (what optimized/optim/multi_tensor.h promises; an FMA rounds once for two),
//             and the conversion of a double hyper-parameter or per-step scalar to float)
//          + u |x| (the reference's own rounding of x)
// with magnitude bounds from the inputs (|p0| <= 1, |g| <= grad_scale, states from zero or AdaGrad's
// initial value) and, for the adaptive methods, bounds on the normalized update that hold for any
// gradients: Adam |m_hat| <= K_t sqrt(v_hat) with K_t^2 = (1-b1)^2 (1-b2^t) / ((1-b1^t)^2 (1-b2))
// * sum_{j<t} (b1^2/b2)^j (Cauchy-Schwarz on the two moving averages), RMSprop |d| / sqrt(square_avg)
// <= 1 / sqrt(1-alpha) and, centered, square_avg - grad_avg^2 >= alpha^t square_avg; AdaGrad
// |d| / sqrt(sum) <= 1. Quantities that are sums of non-negative terms (v, square_avg, AdaGrad's sum)
// carry relative errors, which their positive terms cannot amplify. The gradient's own relative error
// comes from clipping: the fp32 norm of N squares in any summation order is within gamma_N(u).
// Coupled weight decay adds an absolute error wd * E_p to d, which the adaptive methods divide by
// their denominator, at least eps (or sqrt(initial_accumulator_value) for AdaGrad): the bound has a
// 1/eps factor there, a real ill-conditioning (at step 1 Adam moves p by lr * sign(g + wd p), so an
// error near g = -wd p can flip the sign), which is why those cases use a larger eps.
// The rule is harness's accumulation(f32, f32, D, M): rtol = u + gamma_D(u), atol = rtol * M, with M
// the largest magnitude bound and D = ceil(max_x E_x(T) / (u M)); it allows at least E for every
// output element. Assumed of the CUDA side (and promised by multi_tensor.h): per-step scalars
// (lr / (1 - beta1^t), sqrt(1 - beta2^t), 1 - lr * wd, AdaGrad's lr / (1 + (t-1) lr_decay)) and
// complements (1 - beta, 1 - alpha, 1 - dampening) formed in double and converted once, as PyTorch
// does. The bound is a worst case, linear in the steps: plain fp32 math uses a few percent of it after
// 100 steps (its errors add up like a random walk, and stay below the worst-case magnitudes), and
// 10-20 % after one step (suites/optim/tolerance_test.cc prints the numbers).
//
// bf16 precisions: the faithful rule, factor 2 (the optimized side may be no worse than twice the
// faithful fp32-math reference against the fp64-math truth, both in the same storage formats), plus
// atol = one bf16 ulp at M (2 u(bf16) M): one rounding decision of a bf16 store may go the other way
// where the faithful reference's happened not to.
#pragma once

#include <cstdint>
#include <string>

#include "harness/tolerance.h"
#include "suites/optim/run_spec.h"

namespace gauge::suites::optim {

struct ErrorBudget {
  double magnitude = 0.0;      // M: bound on |value| of every stored quantity during the run
  double max_abs_error = 0.0;  // E: bound on |optimized - reference| of every output element
  int64_t roundings = 0;       // D = ceil(E / (u(f32) M))
  std::string derivation;
};

// Throws std::logic_error for a configuration no bound is derived for (centered RMSprop with coupled
// weight decay; Adam with beta2 = 0). The first form bounds every output at once (the largest
// magnitude, the largest error); the second one output by its name ("params", "master", or a state
// of state_names(hyper)) with its own magnitude and error: a second moment of size g^2 is held to
// errors at its own scale, not at the parameters'.
ErrorBudget fp32_error_budget(const RunSpec& spec);
ErrorBudget fp32_error_budget(const RunSpec& spec, const std::string& output);

// The rule of a point (every output) and of one output: fp32 -> accumulation rule from
// fp32_error_budget; bf16 -> faithful rule with one bf16 ulp at the magnitude bound. Cases judge each
// output by its own rule (CaseDecl::output_tolerance).
ToleranceRule tolerance_rule(const RunSpec& spec);
ToleranceRule tolerance_rule(const RunSpec& spec, const std::string& output);

// Gradient accumulation into fp32: the optimized side sums the k micro-batches in fp32 (k - 1
// roundings, each at most u times a partial sum of |g_j|), multiplies by fp32(1/k) (the constant's
// rounding and the product's); the reference rounds the exact mean once. With |g| <= 1 every error
// is at most u sum_j |g_j| / k <= u, so |optimized - reference| <= (k + 2) u: accumulation(f32, f32,
// k + 1, 1), whose u + gamma_{k+1}(u) covers it.
ToleranceRule accumulation_tolerance_rule(const AccumulationSpec& spec);

}  // namespace gauge::suites::optim
