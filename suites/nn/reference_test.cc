// The nn reference (reference/nn/layers.h) checked against arithmetic it does not share: values worked
// out by hand for tiny inputs, and every backward against central differences of a forward written
// again here in double. Also: the dropout mask (deterministic, keyed, the documented keep rule and
// rate), the edge values of the activations, and the one-line errors for bad sizes and arguments.
#include "reference/nn/layers.h"

#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <functional>
#include <limits>
#include <numbers>
#include <stdexcept>
#include <string>
#include <vector>

#include "harness/philox.h"

namespace gauge::reference::nn {
namespace {

using Doubles = std::vector<double>;
using Floats = std::vector<float>;

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();

// fp32 values uniform in [low, high), keyed so every test sees the same numbers on every machine.
Floats random_floats(size_t n, uint32_t tensor_id, float low, float high) {
  Floats v(n);
  for (size_t i = 0; i < n; ++i) v[i] = rng::uniform_at(0x6e6e, tensor_id, i, low, high);
  return v;
}

Doubles widen(const Floats& v) { return Doubles(v.begin(), v.end()); }

// A writable view of a temporary (alive until the end of the full expression that makes it).
std::span<float> scratch(Floats&& v) { return {v.data(), v.size()}; }

// d loss / d v[i] by central differences in double.
Doubles central_differences(Doubles& v, const std::function<double()>& loss, double h = 1e-5) {
  Doubles grad(v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    const double saved = v[i];
    v[i] = saved + h;
    const double up = loss();
    v[i] = saved - h;
    const double down = loss();
    v[i] = saved;
    grad[i] = (up - down) / (2 * h);
  }
  return grad;
}

// The analytic gradient (fp32, from the reference) agrees with the finite differences to 1e-5 of the
// gradient's scale: far above the fp32 rounding (~6e-8) and the h^2 truncation (~1e-10), far below any
// wrong term.
void expect_gradient(const char* what, const Floats& analytic, const Doubles& numeric) {
  ASSERT_EQ(analytic.size(), numeric.size()) << what;
  double scale = 0;
  for (double g : numeric) scale = std::max(scale, std::abs(g));
  for (size_t i = 0; i < numeric.size(); ++i) {
    EXPECT_NEAR(analytic[i], numeric[i], 1e-5 * std::max(scale, 1e-3)) << what << "[" << i << "]";
  }
}

// A forward written again in double must match the reference's to the one fp32 rounding of its output
// (plus a little: the reference rounds its statistics' inputs differently in a few places).
void expect_forward(const char* what, const Floats& reference, const Doubles& truth) {
  ASSERT_EQ(reference.size(), truth.size()) << what;
  for (size_t i = 0; i < truth.size(); ++i) {
    EXPECT_NEAR(reference[i], truth[i], 2e-7 * std::abs(truth[i]) + 1e-12) << what << "[" << i << "]";
  }
}

double dot(const Doubles& a, const Doubles& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

// ---- Linear -------------------------------------------------------------------------------------------

TEST(NnReferenceLinear, ClosedFormValues) {
  // x [2, 3], w [2, 3], bias [2]: y = x w^T + b.
  const Floats x = {1, 2, 3, -1, 0.5f, 2};
  const Floats w = {1, 0, -1, 2, 1, 0.25f};
  const Floats bias = {0.5f, -1};
  Floats y(4);
  linear_forward({2, 3, 2}, x, w, bias, y);
  EXPECT_EQ(y, (Floats{1 - 3 + 0.5f, 2 + 2 + 0.75f - 1, -1 - 2 + 0.5f, -2 + 0.5f + 0.5f - 1}));
  linear_forward({2, 3, 2}, x, w, {}, y);
  EXPECT_EQ(y, (Floats{-2, 4.75f, -3, -1}));

  const Floats dy = {1, 2, -1, 0.5f};
  Floats dx(6), dw(6), dbias(2);
  linear_backward({2, 3, 2}, x, w, dy, dx, dw, dbias);
  // dx = dy w: row 0 = 1*w0 + 2*w1, row 1 = -w0 + 0.5 w1.
  EXPECT_EQ(dx, (Floats{5, 2, -0.5f, 0, 0.5f, 1.125f}));
  // dw = dy^T x: dw[0] = 1*x0 - x1, dw[1] = 2*x0 + 0.5 x1.
  EXPECT_EQ(dw, (Floats{2, 1.5f, 1, 1.5f, 4.25f, 7}));
  EXPECT_EQ(dbias, (Floats{0, 2.5f}));
}

TEST(NnReferenceLinear, BackwardMatchesFiniteDifferences) {
  const LinearShape s{3, 5, 4};
  const Floats x = random_floats(15, 1, -1, 1), w = random_floats(20, 2, -1, 1), b = random_floats(4, 3, -1, 1);
  const Floats cot = random_floats(12, 4, -1, 1);
  Doubles xd = widen(x), wd = widen(w), bd = widen(b);
  const Doubles cotd = widen(cot);
  const auto forward = [&] {
    Doubles y(12);
    for (int64_t r = 0; r < 3; ++r) {
      for (int64_t o = 0; o < 4; ++o) {
        double sum = bd[o];
        for (int64_t i = 0; i < 5; ++i) sum += xd[r * 5 + i] * wd[o * 5 + i];
        y[r * 4 + o] = sum;
      }
    }
    return y;
  };
  const auto loss = [&] { return dot(forward(), cotd); };
  Floats y(12);
  linear_forward(s, x, w, b, y);
  expect_forward("y", y, forward());

  Floats dx(15), dw(20), dbias(4);
  linear_backward(s, x, w, cot, dx, dw, dbias);
  expect_gradient("dx", dx, central_differences(xd, loss));
  expect_gradient("dw", dw, central_differences(wd, loss));
  expect_gradient("dbias", dbias, central_differences(bd, loss));

  // Empty optional outputs are skipped; the others are unchanged by the skip.
  Floats dw_only(20);
  linear_backward(s, x, w, cot, {}, dw_only, {});
  EXPECT_EQ(dw_only, dw);
}

TEST(NnReferenceLinear, BadSizesThrow) {
  Floats x(6), w(6), b(2), y(4), dy(4), dx(6), dw(6), db(2);
  EXPECT_THROW(linear_forward({2, 3, 2}, Floats(5), w, b, y), std::invalid_argument);
  EXPECT_THROW(linear_forward({2, 3, 2}, x, Floats(7), b, y), std::invalid_argument);
  EXPECT_THROW(linear_forward({2, 3, 2}, x, w, Floats(3), y), std::invalid_argument);
  EXPECT_THROW(linear_forward({2, 3, 2}, x, w, b, scratch(Floats(3))), std::invalid_argument);
  EXPECT_THROW(linear_forward({-2, 3, 2}, x, w, b, y), std::invalid_argument);
  EXPECT_THROW(linear_backward({2, 3, 2}, x, w, Floats(3), dx, dw, db), std::invalid_argument);
  EXPECT_THROW(linear_backward({2, 3, 2}, x, w, dy, scratch(Floats(5)), dw, db), std::invalid_argument);
  EXPECT_THROW(linear_backward({2, 3, 2}, x, w, dy, dx, scratch(Floats(5)), db), std::invalid_argument);
  EXPECT_THROW(linear_backward({2, 3, 2}, x, w, dy, dx, dw, scratch(Floats(1))), std::invalid_argument);
  try {
    linear_forward({2, 3, 2}, Floats(5), w, b, y);
  } catch (const std::invalid_argument& e) {
    EXPECT_STREQ(e.what(), "linear_forward: x has 5 elements, expected 6");
  }
}

// ---- Activations --------------------------------------------------------------------------------------

float forward1(Activation a, float x) {
  Floats y(1);
  activation_forward(a, Floats{x}, y);
  return y[0];
}
float backward1(Activation a, float x, float dy) {
  Floats dx(1);
  activation_backward(a, Floats{x}, Floats{dy}, dx);
  return dx[0];
}

TEST(NnReferenceActivation, ClosedFormValues) {
  EXPECT_EQ(forward1(Activation::relu, 2.5f), 2.5f);
  EXPECT_EQ(std::bit_cast<uint32_t>(forward1(Activation::relu, -3.0f)), 0u);
  EXPECT_EQ(std::bit_cast<uint32_t>(forward1(Activation::relu, -0.0f)), 0u);  // -0 -> +0
  EXPECT_TRUE(std::isnan(forward1(Activation::relu, kNaN)));
  EXPECT_EQ(forward1(Activation::relu, kInf), kInf);
  // gelu_tanh(1) = 0.5 (1 + tanh(sqrt(2/pi) 1.044715)); gelu_tanh(-1) = -1 + gelu_tanh(1) (odd part).
  EXPECT_FLOAT_EQ(forward1(Activation::gelu_tanh, 1.0f), 0.84119199f);
  EXPECT_FLOAT_EQ(forward1(Activation::gelu_tanh, -1.0f), -0.15880801f);
  EXPECT_EQ(forward1(Activation::gelu_tanh, 0.0f), 0.0f);
  // silu(1) = 1 / (1 + e^-1); silu(-1) = -1 / (1 + e).
  EXPECT_FLOAT_EQ(forward1(Activation::silu, 1.0f), 0.73105858f);
  EXPECT_FLOAT_EQ(forward1(Activation::silu, -1.0f), -0.26894142f);
  EXPECT_EQ(forward1(Activation::silu, -200.0f), 0.0f);  // e^200 does not overflow the double
  EXPECT_EQ(forward1(Activation::silu, 200.0f), 200.0f);

  EXPECT_EQ(backward1(Activation::relu, 1.0f, 3.0f), 3.0f);
  EXPECT_EQ(backward1(Activation::relu, 0.0f, 3.0f), 0.0f);  // derivative 0 at 0
  EXPECT_EQ(std::bit_cast<uint32_t>(backward1(Activation::relu, -1.0f, -3.0f)), 0x80000000u);  // -3 * 0 = -0
  EXPECT_TRUE(std::isnan(backward1(Activation::relu, -1.0f, kInf)));
  EXPECT_EQ(backward1(Activation::gelu_tanh, 0.0f, 2.0f), 1.0f);  // gelu'(0) = 1/2
  EXPECT_EQ(backward1(Activation::silu, 0.0f, 2.0f), 1.0f);       // silu'(0) = 1/2
}

double activation_in_double(Activation a, double x) {
  switch (a) {
    case Activation::relu:
      return x > 0 ? x : 0;
    case Activation::gelu_tanh:
      return 0.5 * x * (1 + std::tanh(std::sqrt(2 / std::numbers::pi) * (x + 0.044715 * x * x * x)));
    case Activation::silu:
      return x * (1 / (1 + std::exp(-x)));
  }
  return 0;
}

TEST(NnReferenceActivation, BackwardMatchesFiniteDifferences) {
  for (Activation a : {Activation::relu, Activation::gelu_tanh, Activation::silu}) {
    SCOPED_TRACE(static_cast<int>(a));
    Floats x = random_floats(40, 5, -6, 6);
    for (float& v : x) {
      if (std::abs(v) < 1e-3f) v = 0.5f;  // keep relu's kink out of the difference stencil
    }
    const Floats cot = random_floats(40, 6, -2, 2);
    Doubles xd = widen(x);
    const Doubles cotd = widen(cot);
    const auto forward = [&] {
      Doubles y(xd.size());
      for (size_t i = 0; i < xd.size(); ++i) y[i] = activation_in_double(a, xd[i]);
      return y;
    };
    Floats y(40), dx(40);
    activation_forward(a, x, y);
    expect_forward("y", y, forward());
    activation_backward(a, x, cot, dx);
    // Elementwise: the loss's gradient is dy * a'(x) for each element on its own.
    expect_gradient("dx", dx, central_differences(xd, [&] { return dot(forward(), cotd); }));
  }
}

TEST(NnReferenceActivation, BadSizesThrow) {
  Floats y(3);
  EXPECT_THROW(activation_forward(Activation::silu, Floats(4), y), std::invalid_argument);
  EXPECT_THROW(activation_backward(Activation::silu, Floats(3), Floats(2), y), std::invalid_argument);
  EXPECT_THROW(activation_backward(Activation::silu, Floats(3), Floats(3), scratch(Floats(4))), std::invalid_argument);
  EXPECT_THROW(activation_forward(static_cast<Activation>(9), Floats(3), y), std::invalid_argument);
}

// ---- LayerNorm and RMSNorm ------------------------------------------------------------------------------

TEST(NnReferenceNorm, LayerNormClosedForm) {
  // x = 1 2 3 4: mean 2.5, biased variance 1.25, eps 0.
  const Floats x = {1, 2, 3, 4}, gamma = {1, 1, 2, 1}, beta = {0, 0, 0, 1};
  Floats y(4), mean(1), rstd(1);
  layernorm_forward({1, 4, 0.0f}, x, gamma, beta, y, mean, rstd);
  const double r = 1 / std::sqrt(1.25);
  EXPECT_EQ(mean[0], 2.5f);
  EXPECT_EQ(rstd[0], static_cast<float>(r));
  EXPECT_EQ(y, (Floats{static_cast<float>(-1.5 * r), static_cast<float>(-0.5 * r), static_cast<float>(1.0 * r),
                       static_cast<float>(1.5 * r + 1)}));
  // A constant row: variance 0, rstd = 1/sqrt(eps), y = beta.
  Floats y2(2), mean2(1), rstd2(1);
  layernorm_forward({1, 2, 0.25f}, Floats{7, 7}, Floats{3, 3}, Floats{0.5f, -0.5f}, y2, mean2, rstd2);
  EXPECT_EQ(rstd2[0], 2.0f);
  EXPECT_EQ(y2, (Floats{0.5f, -0.5f}));
}

TEST(NnReferenceNorm, RmsNormClosedForm) {
  // x = 3 4: mean square 12.5, eps 0.
  Floats y(2), rstd(1);
  rmsnorm_forward({1, 2, 0.0f}, Floats{3, 4}, Floats{1, 2}, y, rstd);
  const double r = 1 / std::sqrt(12.5);
  EXPECT_EQ(rstd[0], static_cast<float>(r));
  EXPECT_EQ(y, (Floats{static_cast<float>(3 * r), static_cast<float>(8 * r)}));
}

struct NormCase {
  NormShape s{3, 7, 1e-5f};
  Floats x = random_floats(21, 10, -2, 3), gamma = random_floats(7, 11, 0.5f, 1.5f), beta = random_floats(7, 12, -1, 1);
  Floats cot = random_floats(21, 13, -1, 1);
  Doubles xd = widen(x), gd = widen(gamma), bd = widen(beta), cotd = widen(cot);
};

Doubles layernorm_in_double(const NormCase& c) {
  const auto& s = c.s;
  const auto n = static_cast<double>(s.cols);
  Doubles y(c.xd.size());
  for (int64_t r = 0; r < s.rows; ++r) {
    double mu = 0, var = 0;
    for (int64_t j = 0; j < s.cols; ++j) mu += c.xd[r * s.cols + j] / n;
    for (int64_t j = 0; j < s.cols; ++j) var += std::pow(c.xd[r * s.cols + j] - mu, 2) / n;
    for (int64_t j = 0; j < s.cols; ++j) {
      y[r * s.cols + j] = (c.xd[r * s.cols + j] - mu) / std::sqrt(var + s.eps) * c.gd[j] + c.bd[j];
    }
  }
  return y;
}

Doubles rmsnorm_in_double(const NormCase& c) {
  const auto& s = c.s;
  const auto n = static_cast<double>(s.cols);
  Doubles y(c.xd.size());
  for (int64_t r = 0; r < s.rows; ++r) {
    double ms = 0;
    for (int64_t j = 0; j < s.cols; ++j) ms += c.xd[r * s.cols + j] * c.xd[r * s.cols + j] / n;
    for (int64_t j = 0; j < s.cols; ++j) y[r * s.cols + j] = c.xd[r * s.cols + j] / std::sqrt(ms + s.eps) * c.gd[j];
  }
  return y;
}

TEST(NnReferenceNorm, LayerNormBackwardMatchesFiniteDifferences) {
  NormCase c;
  Floats y(21), mean(3), rstd(3);
  layernorm_forward(c.s, c.x, c.gamma, c.beta, y, mean, rstd);
  expect_forward("y", y, layernorm_in_double(c));
  Floats dx(21), dgamma(7), dbeta(7);
  layernorm_backward(c.s, c.x, c.gamma, mean, rstd, c.cot, dx, dgamma, dbeta);
  const auto loss = [&] { return dot(layernorm_in_double(c), c.cotd); };
  expect_gradient("dx", dx, central_differences(c.xd, loss));
  expect_gradient("dgamma", dgamma, central_differences(c.gd, loss));
  expect_gradient("dbeta", dbeta, central_differences(c.bd, loss));
  Floats dx_only(21);
  layernorm_backward(c.s, c.x, c.gamma, mean, rstd, c.cot, dx_only, {}, {});
  EXPECT_EQ(dx_only, dx);
}

TEST(NnReferenceNorm, RmsNormBackwardMatchesFiniteDifferences) {
  NormCase c;
  Floats y(21), rstd(3);
  rmsnorm_forward(c.s, c.x, c.gamma, y, rstd);
  expect_forward("y", y, rmsnorm_in_double(c));
  Floats dx(21), dgamma(7);
  rmsnorm_backward(c.s, c.x, c.gamma, rstd, c.cot, dx, dgamma);
  const auto loss = [&] { return dot(rmsnorm_in_double(c), c.cotd); };
  expect_gradient("dx", dx, central_differences(c.xd, loss));
  expect_gradient("dgamma", dgamma, central_differences(c.gd, loss));
}

TEST(NnReferenceNorm, BadSizesThrow) {
  Floats x(6), g(3), b(3), y(6), m(2), r(2), dy(6), dx(6), dg(3), db(3);
  const NormShape s{2, 3, 1e-5f};
  EXPECT_THROW(layernorm_forward(s, Floats(5), g, b, y, m, r), std::invalid_argument);
  EXPECT_THROW(layernorm_forward(s, x, Floats(2), b, y, m, r), std::invalid_argument);
  EXPECT_THROW(layernorm_forward(s, x, g, Floats(4), y, m, r), std::invalid_argument);
  EXPECT_THROW(layernorm_forward(s, x, g, b, y, scratch(Floats(1)), r), std::invalid_argument);
  EXPECT_THROW(layernorm_forward(s, x, g, b, y, m, scratch(Floats(3))), std::invalid_argument);
  EXPECT_THROW(layernorm_forward({2, 3, kNaN}, x, g, b, y, m, r), std::invalid_argument);
  EXPECT_THROW(layernorm_forward({2, 3, -1.0f}, x, g, b, y, m, r), std::invalid_argument);
  EXPECT_THROW(layernorm_backward(s, x, g, m, r, Floats(5), dx, dg, db), std::invalid_argument);
  EXPECT_THROW(layernorm_backward(s, x, g, m, r, dy, dx, scratch(Floats(2)), db), std::invalid_argument);
  EXPECT_THROW(layernorm_backward(s, x, g, m, r, dy, dx, dg, scratch(Floats(6))), std::invalid_argument);
  EXPECT_THROW(rmsnorm_forward(s, x, g, scratch(Floats(7)), r), std::invalid_argument);
  EXPECT_THROW(rmsnorm_forward({2, 0, 1e-5f}, Floats(0), Floats(0), scratch(Floats(0)), r), std::invalid_argument);
  EXPECT_THROW(rmsnorm_backward(s, x, g, Floats(1), dy, dx, dg), std::invalid_argument);
  EXPECT_THROW(rmsnorm_backward(s, x, g, r, dy, scratch(Floats(3)), dg), std::invalid_argument);
}

// ---- Softmax cross-entropy ------------------------------------------------------------------------------

TEST(NnReferenceSoftmaxCrossEntropy, ClosedFormValues) {
  // Row 0: two equal logits, loss ln 2. Row 1: logits 1 2 3, label 2: loss ln(e + e^2 + e^3) - 3.
  const Floats logits = {0, 0, -1e30f, 1, 2, 3};
  const std::vector<int32_t> labels = {0, 2};
  Floats losses(2);
  const double l1 = std::log(std::exp(1.0) + std::exp(2.0) + std::exp(3.0)) - 3;
  // Row 0 has three classes; -1e30 adds exp(-1e30) = 0.
  const double mean = softmax_cross_entropy_forward(2, 3, logits, labels, losses);
  EXPECT_NEAR(mean, (std::log(2.0) + l1) / 2, 1e-15);
  EXPECT_EQ(losses[0], static_cast<float>(std::log(2.0)));
  EXPECT_FLOAT_EQ(losses[1], static_cast<float>(l1));
  EXPECT_EQ(softmax_cross_entropy_forward(2, 3, logits, labels, {}), mean);

  Floats d(6);
  softmax_cross_entropy_backward(2, 3, logits, labels, 4.0f, d);  // scale / rows = 2
  EXPECT_EQ(d[0], -1.0f);  // (1/2 - 1) * 2
  EXPECT_EQ(d[1], 1.0f);
  EXPECT_EQ(d[2], 0.0f);
  const double z = std::exp(1.0) + std::exp(2.0) + std::exp(3.0);
  EXPECT_FLOAT_EQ(d[5], static_cast<float>((std::exp(3.0) / z - 1) * 2));
  // Large logits do not overflow: the max is subtracted.
  EXPECT_NEAR(softmax_cross_entropy_forward(1, 2, Floats{1000, 1000}, std::vector<int32_t>{1}, {}), std::log(2.0), 1e-15);
}

TEST(NnReferenceSoftmaxCrossEntropy, BackwardMatchesFiniteDifferences) {
  const int64_t rows = 3, classes = 6;
  const Floats logits = random_floats(18, 20, -4, 4);
  const std::vector<int32_t> labels = {5, 0, 2};
  Doubles ld = widen(logits);
  const float scale = 8.0f;
  const auto loss = [&] {
    double total = 0;
    for (int64_t r = 0; r < rows; ++r) {
      double z = 0;
      for (int64_t c = 0; c < classes; ++c) z += std::exp(ld[r * classes + c]);
      total += std::log(z) - ld[r * classes + labels[r]];
    }
    return scale * total / rows;
  };
  EXPECT_NEAR(softmax_cross_entropy_forward(rows, classes, logits, labels, {}) * scale, loss(), 1e-12);
  Floats d(18);
  softmax_cross_entropy_backward(rows, classes, logits, labels, scale, d);
  expect_gradient("dlogits", d, central_differences(ld, loss));
  double row_sum = 0;  // each row of softmax - onehot sums to 0
  for (int64_t c = 0; c < classes; ++c) row_sum += d[c];
  EXPECT_NEAR(row_sum, 0.0, 1e-6);
}

TEST(NnReferenceSoftmaxCrossEntropy, BadArgumentsThrow) {
  const Floats logits(6);
  Floats d(6);
  EXPECT_THROW(softmax_cross_entropy_forward(2, 3, Floats(5), std::vector<int32_t>{0, 0}, {}), std::invalid_argument);
  EXPECT_THROW(softmax_cross_entropy_forward(2, 3, logits, std::vector<int32_t>{0}, {}), std::invalid_argument);
  EXPECT_THROW(softmax_cross_entropy_forward(2, 3, logits, std::vector<int32_t>{0, 0}, scratch(Floats(3))), std::invalid_argument);
  EXPECT_THROW(softmax_cross_entropy_forward(0, 3, Floats(0), std::vector<int32_t>{}, {}), std::invalid_argument);
  EXPECT_THROW(softmax_cross_entropy_backward(2, 3, logits, std::vector<int32_t>{0, 0}, kNaN, d), std::invalid_argument);
  EXPECT_THROW(softmax_cross_entropy_backward(2, 3, logits, std::vector<int32_t>{0, 0}, 1.0f, scratch(Floats(5))),
               std::invalid_argument);
  try {
    softmax_cross_entropy_forward(2, 3, logits, std::vector<int32_t>{0, 3}, {});
    ADD_FAILURE() << "label 3 of 3 classes accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_STREQ(e.what(), "softmax_cross_entropy_forward: label of row 1 is 3, outside [0, 3)");
  }
  EXPECT_THROW(softmax_cross_entropy_backward(2, 3, logits, std::vector<int32_t>{-1, 0}, 1.0f, d), std::invalid_argument);
}

// ---- Dropout ------------------------------------------------------------------------------------------

TEST(NnReferenceDropout, ScaleAndKeepRule) {
  EXPECT_EQ(dropout_scale(0.0f), 1.0f);
  EXPECT_EQ(dropout_scale(0.5f), 2.0f);
  EXPECT_EQ(dropout_scale(0.1f), static_cast<float>(1.0 / (1.0 - static_cast<double>(0.1f))));
  for (uint64_t i = 0; i < 64; ++i) {
    const float u = rng::uniform01(rng::bits_at(42, 7, rng::Stream::dropout, i));
    EXPECT_EQ(dropout_keep(0.3f, 42, 7, i), u >= 0.3f) << i;
    EXPECT_TRUE(dropout_keep(0.0f, 42, 7, i));
  }
}

TEST(NnReferenceDropout, MaskIsDeterministicKeyedAndHasTheKeepRate) {
  const size_t n = 200000;
  const float p = 0.3f;
  const Floats x = random_floats(n, 30, 0.5f, 2.0f);  // never zero, so a zero output means dropped
  Floats y1(n), y2(n), y_other_key(n);
  dropout_forward(p, 99, 3, x, y1);
  dropout_forward(p, 99, 3, x, y2);
  dropout_forward(p, 99, 4, x, y_other_key);
  EXPECT_EQ(y1, y2);
  const float scale = dropout_scale(p);
  size_t kept = 0, differs = 0;
  for (size_t i = 0; i < n; ++i) {
    const bool keep = dropout_keep(p, 99, 3, i);
    kept += keep ? 1 : 0;
    ASSERT_EQ(std::bit_cast<uint32_t>(y1[i]), std::bit_cast<uint32_t>(keep ? x[i] * scale : 0.0f)) << i;
    differs += (y1[i] == 0.0f) != (y_other_key[i] == 0.0f) ? 1 : 0;
  }
  // Binomial(n, 0.7): standard deviation sqrt(n p (1 - p)) ~ 205; 6 sigma.
  EXPECT_NEAR(static_cast<double>(kept), 0.7 * n, 6 * std::sqrt(n * 0.21));
  // Independent masks disagree on 2 p (1 - p) = 42% of the elements.
  EXPECT_NEAR(static_cast<double>(differs), 0.42 * n, 6 * std::sqrt(n * 0.42 * 0.58));

  // Backward applies the same mask to dy.
  const Floats dy = random_floats(n, 31, -1, 1);
  Floats dx(n);
  dropout_backward(p, 99, 3, dy, dx);
  for (size_t i = 0; i < n; ++i) {
    ASSERT_EQ(std::bit_cast<uint32_t>(dx[i]), std::bit_cast<uint32_t>(y1[i] != 0.0f ? dy[i] * scale : 0.0f)) << i;
  }
}

TEST(NnReferenceDropout, ZeroProbabilityIsTheIdentity) {
  const Floats x = {1.5f, -0.0f, kInf, -3.25f};
  Floats y(4);
  dropout_forward(0.0f, 1, 2, x, y);
  for (size_t i = 0; i < 4; ++i) EXPECT_EQ(std::bit_cast<uint32_t>(y[i]), std::bit_cast<uint32_t>(x[i]));
}

TEST(NnReferenceDropout, BadArgumentsThrow) {
  Floats y(3);
  EXPECT_THROW(dropout_scale(1.0f), std::invalid_argument);
  EXPECT_THROW(dropout_scale(-0.1f), std::invalid_argument);
  EXPECT_THROW(dropout_scale(kNaN), std::invalid_argument);
  EXPECT_THROW(dropout_forward(1.0f, 0, 0, Floats(3), y), std::invalid_argument);
  EXPECT_THROW(dropout_forward(0.5f, 0, 0, Floats(4), y), std::invalid_argument);
  EXPECT_THROW(dropout_backward(0.5f, 0, 0, Floats(2), y), std::invalid_argument);
}

}  // namespace
}  // namespace gauge::reference::nn
