// The first-order error propagation of tolerance_rules.h, one recursion per algorithm. Each line of a
// recursion is commented with the operations it counts; E_* are absolute error bounds, eps_* relative
// ones, and the capital letters magnitude bounds, all as of the current step.
#include "suites/optim/tolerance_rules.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <sstream>
#include <stdexcept>
#include <vector>

#include "reference/optim/schedule.h"

namespace gauge::suites::optim {
namespace {

// Rounding weights, in units of u (tolerance_rules.h).
constexpr double kOp = 1.0;       // add, subtract, multiply, max
constexpr double kDivSqrt = 1.0;  // divide, square root: IEEE-rounded, as optimized/optim/multi_tensor.h
                                  // promises (nvcc's default -prec-div/-prec-sqrt); rsqrtf or __fdividef
                                  // (2 ulp) would need 2
constexpr double kScalar = 1.0;  // a double scalar converted to float once
constexpr double kStore = 1.0;   // the reference's rounding of a stored value

const double u = unit_roundoff(DType::f32);

// Per stored quantity (by its output name: "params", then the state names of state_names(hyper)):
// the largest magnitude bound over the run and the error bound at its end. The recursions report both
// at every step, so a bound is the largest seen.
struct QuantityBound {
  double magnitude = 0.0;
  double error = 0.0;
};
struct Propagation {
  std::map<std::string, QuantityBound> quantities;
  void see(const std::string& name, double magnitude_now, double error_now) {
    QuantityBound& q = quantities[name];
    q.magnitude = std::max(q.magnitude, magnitude_now);
    q.error = std::max(q.error, error_now);
  }
  // The largest magnitude among the stored quantities and the gradients the update read, and the
  // largest error: the point's single rule.
  double magnitude = 1.0;  // initial parameters are in [-1, 1)
  double error = 0.0;
  void see_magnitude(double m) { magnitude = std::max(magnitude, m); }
  void see_error(double e) { error = std::max(error, e); }
};

std::vector<double> learning_rates(const RunSpec& s) {
  std::vector<double> lrs;
  for (int64_t t = 1; t <= s.steps; ++t) lrs.push_back(reference::optim::scheduled_lr(s.hyper.lr, s.schedule, t));
  return lrs;
}

// Relative error of the clipped gradient c * g as the optimized side forms it, against the reference's
// exact product (zero without clipping: the gradient is an input both sides read exactly).
double clipped_gradient_relative_error(const RunSpec& s) {
  if (s.options.max_grad_norm <= 0.0) return 0.0;
  const int64_t n = make_layout(s.sizes).parameters;
  const double sum_of_squares = tolerance::gamma(n, u);        // n squares and n - 1 additions, any order
  const double norm = sum_of_squares / 2.0 + kDivSqrt * u;       // the root halves it, then rounds
  const double coefficient = norm + (kScalar + kOp) * u          // + 1e-6 (converted)
                             + (kScalar + kDivSqrt) * u;         // max_grad_norm (converted) / (...)
  return coefficient + kOp * u;                                  // g * coefficient
}

// Adam's K_t: |m_hat| <= K_t sqrt(v_hat) and EMA_beta1(|d|) / (1 - beta1^t) <= K_t sqrt(v_hat).
double adam_ratio_bound(double beta1, double beta2, int64_t t) {
  double sum = 0.0, power = 1.0;
  for (int64_t j = 0; j < t; ++j) {
    sum += power;
    power *= beta1 * beta1 / beta2;
  }
  const double bc1 = 1.0 - std::pow(beta1, static_cast<double>(t));
  const double bc2 = 1.0 - std::pow(beta2, static_cast<double>(t));
  return std::sqrt((1.0 - beta1) * (1.0 - beta1) * bc2 / (bc1 * bc1 * (1.0 - beta2)) * sum);
}

// SGD: d = g + wd p; buf; p - lr * dir. Everything absolute.
Propagation sgd(const RunSpec& s, const std::vector<double>& lrs, double eps_g) {
  const auto& h = s.hyper;
  const double wd = h.weight_decay, mu = h.momentum, keep = 1.0 - h.dampening, G = s.grad_scale;
  Propagation out;
  double P = 1.0, E_p = 0.0, B = 0.0, E_buf = 0.0;
  for (int64_t t = 1; t <= s.steps; ++t) {
    const double lr = lrs[static_cast<size_t>(t - 1)];
    const double D = G + wd * P;
    // c g carries eps_g; wd p: scalar + multiply at wd P, the propagated wd E_p; the sum rounds at D.
    const double E_d = eps_g * G + wd * E_p + (wd != 0.0 ? (kScalar + kOp) * u * wd * P + kOp * u * D : 0.0);
    double R = D, E_dir = E_d;
    if (mu != 0.0) {
      if (t == 1) {
        B = D;
        E_buf = E_d + kStore * u * B;  // buf = d, stored
      } else {
        const double B_new = mu * B + keep * D;
        // momentum (scalar, multiply) at mu B, 1 - dampening (scalar, multiply) at D, the sum, the store.
        E_buf = mu * E_buf + keep * E_d +
                u * ((kScalar + kOp) * mu * B + (kScalar + kOp) * keep * D + kOp * B_new + kStore * B_new);
        B = B_new;
      }
      if (h.nesterov) {
        R = D + mu * B;
        E_dir = E_d + mu * E_buf + u * ((kScalar + kOp) * mu * B + kOp * R);  // d + momentum * buf
      } else {
        R = B;
        E_dir = E_buf;
      }
    }
    P += lr * R;
    // lr (scalar) * dir (multiply), the subtraction at P, the store at P.
    E_p += lr * E_dir + u * ((kScalar + kOp) * lr * R + kOp * P + kStore * P);
    out.see_magnitude(std::max({P, B, D}));
    out.see("params", P, E_p);
    if (mu != 0.0) out.see("momentum_buffer", B, E_buf);
  }
  out.see_error(std::max(E_p, E_buf));
  return out;
}

// AdaGrad: sum relative (positive terms); the update's ratio |d| / (sqrt(sum) + eps) <= 1.
Propagation adagrad(const RunSpec& s, const std::vector<double>& lrs, double eps_g) {
  const auto& h = s.hyper;
  const double wd = h.weight_decay, G = s.grad_scale;
  const double denominator_floor = std::sqrt(h.initial_accumulator_value) + h.eps;
  Propagation out;
  double P = 1.0, E_p = 0.0, S = h.initial_accumulator_value, eps_sum = 0.0, E_sum_abs = 0.0, E_dabs_max = 0.0;
  for (int64_t t = 1; t <= s.steps; ++t) {
    const double clr = lrs[static_cast<size_t>(t - 1)] / (1.0 + static_cast<double>(t - 1) * h.lr_decay);
    const double D = G + wd * P;
    const double eps_d = eps_g + (wd != 0.0 ? kOp * u : 0.0);              // the sum g + wd p rounds at |d|
    const double E_dabs = wd * (E_p + (kScalar + kOp) * u * P);            // wd p: not relative to |d|
    E_dabs_max = std::max(E_dabs_max, E_dabs);
    eps_sum = std::max(eps_sum, 2.0 * eps_d) + (kOp + kOp + kStore) * u;  // d * d, + , store
    S += D * D;
    E_sum_abs += 2.0 * D * E_dabs;
    const double eps_den = eps_sum / 2.0 + kDivSqrt * u + (kScalar + kOp) * u;  // sqrt, + eps
    const double K = 1.0;                                                      // |d| / sqrt(init + d^2)
    // d / std: the relative errors and the divide; the absolute part of d over the denominator floor,
    // and through sqrt(sum), which moves by at most sqrt(t) max E_dabs (triangle inequality).
    const double E_q = K * (eps_d + eps_den + kDivSqrt * u) +
                       (wd != 0.0 ? (E_dabs + K * std::sqrt(static_cast<double>(t)) * E_dabs_max) / denominator_floor : 0.0);
    P += clr * K;
    E_p += clr * E_q + u * ((kScalar + kOp) * clr * K + kOp * P + kStore * P);  // clr * q, -, store
    out.see_magnitude(std::max({P, S, D}));
    out.see("params", P, E_p);
    out.see("sum", S, eps_sum * S + E_sum_abs);
  }
  out.see_error(std::max(E_p, eps_sum * S + E_sum_abs));
  return out;
}

// RMSprop: square_avg relative; grad_avg relative to the moving average of |d|; the ratio d / avg
// bounded by 1/sqrt(1-alpha), or 1/sqrt(alpha^t (1-alpha)) centered.
Propagation rmsprop(const RunSpec& s, const std::vector<double>& lrs, double eps_g) {
  const auto& h = s.hyper;
  const double wd = h.weight_decay, alpha = h.alpha, mu = h.momentum, G = s.grad_scale;
  if (h.centered && wd != 0.0) {
    throw std::logic_error("no fp32 error bound is derived for centered RMSprop with coupled weight decay");
  }
  Propagation out;
  double P = 1.0, E_p = 0.0, SQ = 0.0, eps_sq = 0.0, E_sq_abs = 0.0, B = 0.0, E_buf = 0.0, E_dabs_max = 0.0;
  double E_grad_avg = 0.0;
  for (int64_t t = 1; t <= s.steps; ++t) {
    const double lr = lrs[static_cast<size_t>(t - 1)];
    const double D = G + wd * P;
    const double eps_d = eps_g + (wd != 0.0 ? kOp * u : 0.0);
    const double E_dabs = wd * (E_p + (kScalar + kOp) * u * P);
    E_dabs_max = std::max(E_dabs_max, E_dabs);
    // alpha (scalar, multiply), 1 - alpha (scalar, multiply), * d, +, store: positive terms.
    eps_sq = std::max(eps_sq, 2.0 * eps_d) + (2.0 * (kScalar + kOp) + kOp + kOp + kStore) * u;
    SQ = alpha * SQ + (1.0 - alpha) * D * D;
    E_sq_abs = alpha * E_sq_abs + (1.0 - alpha) * 2.0 * D * E_dabs;
    const double alpha_t = std::pow(alpha, static_cast<double>(t));
    double eps_den = 0.0, K = 0.0;
    if (h.centered) {
      const double weight = 1.0 - alpha_t;
      // grad_avg: the same five operations and store each step, errors decaying by alpha: at most
      // 6 t u times the moving average of |d|, plus d's own relative error.
      const double eps_grad_avg = (2.0 * (kScalar + kOp) + kOp + kStore) * static_cast<double>(t) * u + eps_d;
      E_grad_avg = eps_grad_avg * D;
      // square_avg - grad_avg^2: square_avg's error, the square and the subtraction (2 u square_avg),
      // 2 |grad_avg| E_grad_avg <= 2 weight eps_grad_avg square_avg; divided by the variance, at least
      // alpha^t square_avg.
      const double eps_var = (eps_sq + 2.0 * kOp * u + 2.0 * weight * eps_grad_avg) / alpha_t;
      eps_den = eps_var / 2.0 + kDivSqrt * u + (kScalar + kOp) * u;
      K = 1.0 / std::sqrt(alpha_t * (1.0 - alpha));
    } else {
      eps_den = eps_sq / 2.0 + kDivSqrt * u + (kScalar + kOp) * u;
      K = 1.0 / std::sqrt(1.0 - alpha);
    }
    // d / avg; with coupled decay, d's absolute error over avg >= eps, and avg moves by at most
    // sqrt(weight) max E_dabs <= max E_dabs (triangle inequality on the weighted root mean square).
    const double E_q = K * (eps_d + eps_den + kDivSqrt * u) + (wd != 0.0 ? (1.0 + K) * E_dabs_max / h.eps : 0.0);
    if (mu > 0.0) {
      const double B_new = mu * B + K;
      E_buf = mu * E_buf + E_q + u * ((kScalar + kOp) * mu * B + kOp * B_new + kStore * B_new);
      B = B_new;
      P += lr * B;
      E_p += lr * E_buf + u * ((kScalar + kOp) * lr * B + kOp * P + kStore * P);
    } else {
      P += lr * K;
      E_p += lr * E_q + u * ((kScalar + kOp) * lr * K + kOp * P + kStore * P);
    }
    out.see_magnitude(std::max({P, SQ, D, B}));
    out.see("params", P, E_p);
    out.see("square_avg", SQ, eps_sq * SQ + E_sq_abs);
    if (mu > 0.0) out.see("momentum_buffer", B, E_buf);
    if (h.centered) out.see("grad_avg", D, E_grad_avg);  // |grad_avg| <= (1 - alpha^t) max |d|
  }
  out.see_error(std::max({E_p, eps_sq * SQ + E_sq_abs, E_buf, E_grad_avg}));
  return out;
}

// Adam / AdamW: m relative to the moving average of |d|, v relative, the ratio r = m_hat / (sqrt(v_hat)
// + eps) bounded by K_t.
Propagation adam(const RunSpec& s, const std::vector<double>& lrs, double eps_g) {
  const auto& h = s.hyper;
  if (h.beta2 == 0.0) throw std::logic_error("no fp32 error bound is derived for Adam with beta2 = 0");
  const bool decoupled = h.algorithm == Algorithm::adamw;
  const double coupled_wd = decoupled ? 0.0 : h.weight_decay, G = s.grad_scale;
  Propagation out;
  double P = 1.0, E_p = 0.0, eps_v = 0.0, E_dabs_max = 0.0, E_m = 0.0, E_v = 0.0;
  for (int64_t t = 1; t <= s.steps; ++t) {
    const double lr = lrs[static_cast<size_t>(t - 1)];
    const double D = G + coupled_wd * P;
    const double eps_d = eps_g + (coupled_wd != 0.0 ? kOp * u : 0.0);
    const double E_dabs = coupled_wd * (E_p + (kScalar + kOp) * u * P);
    E_dabs_max = std::max(E_dabs_max, E_dabs);
    const double K = adam_ratio_bound(h.beta1, h.beta2, t);
    // m: beta1 (scalar, multiply), 1 - beta1 (scalar, multiply), +, store each step, decaying by beta1.
    const double eps_m = (2.0 * (kScalar + kOp) + kOp + kStore) * static_cast<double>(t) * u + eps_d;
    // v: d * d, beta2 (scalar, multiply), 1 - beta2 (scalar, multiply), +, store; positive terms. The
    // amsgrad maximum is exact and keeps the bound.
    eps_v = std::max(eps_v, 2.0 * eps_d) + (kOp + 2.0 * (kScalar + kOp) + kOp + kStore) * u;
    // denom: sqrt, / sqrt(bc2) (scalar, divide), + eps (scalar, add).
    const double eps_den = eps_v / 2.0 + kDivSqrt * u + (kScalar + kDivSqrt) * u + (kScalar + kOp) * u;
    // r: m / denom (divide), step_size (scalar) * (multiply); coupled decay's absolute error of d
    // reaches m_hat undamped and sqrt(v_hat) by at most max E_dabs, both over denom >= eps.
    const double E_r = K * (eps_m + eps_den + (kDivSqrt + kScalar + kOp) * u) +
                       (coupled_wd != 0.0 ? (1.0 + K) * E_dabs_max / h.eps : 0.0);
    const double decay = decoupled ? 1.0 - lr * h.weight_decay : 1.0;
    P = P * decay + lr * K;
    // (AdamW: 1 - lr wd (scalar) * p (multiply)), the subtraction, the store.
    E_p = E_p * decay + lr * E_r + u * P * ((decoupled ? kScalar + kOp : 0.0) + kOp + kStore);
    // |m| <= w1 max |d| and |v| <= w2 max d^2, with w = 1 - beta^t the moving averages' total weight;
    // their errors are relative to those sizes, plus d's absolute error carried through the averages.
    const double w1 = 1.0 - std::pow(h.beta1, static_cast<double>(t));
    const double w2 = 1.0 - std::pow(h.beta2, static_cast<double>(t));
    E_m = w1 * (eps_m * D + E_dabs_max);
    E_v = w2 * (eps_v * D * D + 2.0 * D * E_dabs_max);
    out.see_magnitude(std::max({P, D, D * D}));
    out.see("params", P, E_p);
    out.see("exp_avg", w1 * D, E_m);
    out.see("exp_avg_sq", w2 * D * D, E_v);
    if (h.amsgrad) out.see("max_exp_avg_sq", w2 * D * D, E_v);  // a maximum of v's (exact): v's bounds
  }
  out.see_error(std::max({E_p, E_m, E_v}));
  return out;
}

Propagation propagate(const RunSpec& s) {
  const std::vector<double> lrs = learning_rates(s);
  const double eps_g = clipped_gradient_relative_error(s);
  switch (s.hyper.algorithm) {
    case Algorithm::sgd: return sgd(s, lrs, eps_g);
    case Algorithm::adagrad: return adagrad(s, lrs, eps_g);
    case Algorithm::rmsprop: return rmsprop(s, lrs, eps_g);
    case Algorithm::adam:
    case Algorithm::adamw: return adam(s, lrs, eps_g);
  }
  throw std::logic_error("unknown algorithm");
}

}  // namespace

namespace {

ErrorBudget budget_of(const RunSpec& spec, double magnitude, double error, const std::string& what) {
  ErrorBudget budget;
  budget.magnitude = magnitude;
  budget.max_abs_error = error;
  budget.roundings = std::max<int64_t>(1, static_cast<int64_t>(std::ceil(error / (u * magnitude))));
  std::ostringstream why;
  why.precision(3);
  why << gauge::optim::algorithm_name(spec.hyper.algorithm) << " fp32, " << spec.steps << " steps, " << what
      << ": first-order propagation of per-operation roundings (suites/optim/tolerance_rules.h) gives "
      << budget.roundings << " u at magnitude M = " << budget.magnitude << "; rtol = u + gamma_" << budget.roundings
      << "(u), atol = rtol * M";
  budget.derivation = why.str();
  return budget;
}

// The master weights follow the parameters' recursion (bf16_master: the update runs on them).
const QuantityBound& quantity(const Propagation& p, const std::string& output) {
  const auto found = p.quantities.find(output == "master" ? "params" : output);
  if (found == p.quantities.end()) throw std::logic_error("no error bound is derived for optimizer output '" + output + "'");
  return found->second;
}

ToleranceRule rule_from(const RunSpec& spec, double magnitude, double error, const std::string& what) {
  if (spec.precision == Precision::fp32) {
    const ErrorBudget budget = budget_of(spec, magnitude, error, what);
    ToleranceRule rule = tolerance::accumulation(DType::f32, DType::f32, budget.roundings, budget.magnitude);
    rule.derivation = budget.derivation;
    return rule;
  }
  std::ostringstream why;
  why.precision(3);
  why << what << ": no worse than twice the faithful fp32-math reference against the fp64-math truth (same "
         "storage formats), plus one bf16 ulp at the magnitude bound "
      << magnitude << " for a store rounding the other way";
  return tolerance::faithful(2.0, 2.0 * unit_roundoff(DType::bf16) * magnitude, why.str());
}

}  // namespace

ErrorBudget fp32_error_budget(const RunSpec& spec) {
  const Propagation p = propagate(spec);
  return budget_of(spec, p.magnitude, p.error, "every output");
}

ErrorBudget fp32_error_budget(const RunSpec& spec, const std::string& output) {
  const Propagation p = propagate(spec);
  const QuantityBound& q = quantity(p, output);
  return budget_of(spec, q.magnitude, q.error, output);
}

ToleranceRule tolerance_rule(const RunSpec& spec) {
  const Propagation p = propagate(spec);
  return rule_from(spec, p.magnitude, p.error, "every output");
}

ToleranceRule tolerance_rule(const RunSpec& spec, const std::string& output) {
  const Propagation p = propagate(spec);
  const QuantityBound& q = quantity(p, output);
  return rule_from(spec, q.magnitude, q.error, output);
}

ToleranceRule accumulation_tolerance_rule(const AccumulationSpec& spec) {
  const int64_t k = spec.micro_batches;
  const double magnitude = 1.0;  // |g| <= 1: the inputs are uniform in [-1, 1)
  ToleranceRule rule = tolerance::accumulation(DType::f32, DType::f32, k + 1, magnitude);
  rule.derivation = "mean of " + std::to_string(k) + " micro-batches: " + std::to_string(k - 1) +
                    " fp32 additions, fp32(1/k), the scaling and the reference's rounding, each within u sum|g|/k <= u; "
                    "rtol = u + gamma_" + std::to_string(k + 1) + "(u), atol = rtol * 1";
  return rule;
}

}  // namespace gauge::suites::optim
