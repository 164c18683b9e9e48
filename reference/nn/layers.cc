// Plain CPU layers: the formulas of layers.h written as loops, every sum and statistic in double,
// every output rounded once to fp32. Speed is secondary; the loop orders only keep the inner loop
// walking contiguous memory so that the ctest shapes take milliseconds.
//
// Edge values, fixed here because "max(x, 0)" and "dy * a'(x)" leave them open:
// - relu(x) is x for x > 0, NaN for NaN (it propagates, as in PyTorch), +0 otherwise (so -0 -> +0).
// - activation_backward is the double product dy * a'(x) rounded once; for relu a'(x) is exactly
//   1 (x > 0) or 0, so dx is dy, or a signed zero (-0 for negative dy), or NaN for dy = +-Inf or NaN
//   at x <= 0, and NaN for x = NaN.
// - Dropped dropout elements are +0 whatever x is (a NaN input is dropped too).
#include "reference/nn/layers.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numbers>
#include <stdexcept>
#include <string>

#include "harness/memory.h"
#include "harness/philox.h"

namespace gauge::reference::nn {
namespace {

void require_non_negative(const char* function, const char* dim, int64_t value) {
  if (value < 0) {
    throw std::invalid_argument(std::string(function) + ": " + dim + " is " + std::to_string(value) +
                                ", must be >= 0");
  }
}

template <class T>
void require_size(const char* function, const char* operand, std::span<T> span, int64_t expected) {
  if (static_cast<int64_t>(span.size()) != expected) {
    throw std::invalid_argument(std::string(function) + ": " + operand + " has " + std::to_string(span.size()) +
                                " elements, expected " + std::to_string(expected));
  }
}

// Optional outputs: empty (skipped) or exactly the expected size.
template <class T>
bool wanted(const char* function, const char* operand, std::span<T> span, int64_t expected) {
  if (span.empty() && expected != 0) return false;
  require_size(function, operand, span, expected);
  return true;
}

void require_linear_shape(const char* function, const LinearShape& s) {
  require_non_negative(function, "rows", s.rows);
  require_non_negative(function, "in", s.in);
  require_non_negative(function, "out", s.out);
}

void require_norm_shape(const char* function, const NormShape& s) {
  require_non_negative(function, "rows", s.rows);
  require_non_negative(function, "cols", s.cols);
  if (s.cols == 0 && s.rows > 0) throw std::invalid_argument(std::string(function) + ": cols is 0");
  if (!(s.eps >= 0.0f) || !std::isfinite(s.eps)) {
    throw std::invalid_argument(std::string(function) + ": eps is " + std::to_string(s.eps) +
                                ", must be finite and >= 0");
  }
}

size_t at(int64_t i) { return static_cast<size_t>(i); }

// ---- Activations in double --------------------------------------------------------------------------

constexpr double kGeluCoefficient = 0.044715;
const double kSqrtTwoOverPi = std::sqrt(2.0 / std::numbers::pi);

double activation_value(Activation a, double x) {
  switch (a) {
    case Activation::relu:
      return (x > 0.0 || std::isnan(x)) ? x : 0.0;
    case Activation::gelu_tanh:
      return 0.5 * x * (1.0 + std::tanh(kSqrtTwoOverPi * (x + kGeluCoefficient * x * x * x)));
    case Activation::silu:
      return x / (1.0 + std::exp(-x));
  }
  throw std::invalid_argument("activation_forward: unknown activation " + std::to_string(static_cast<int>(a)));
}

double activation_derivative(Activation a, double x) {
  switch (a) {
    case Activation::relu:
      if (std::isnan(x)) return x;
      return x > 0.0 ? 1.0 : 0.0;
    case Activation::gelu_tanh: {
      // d/dx 0.5 x (1 + tanh(u)), u = k (x + c x^3): 0.5 (1 + t) + 0.5 x (1 - t^2) k (1 + 3 c x^2).
      const double t = std::tanh(kSqrtTwoOverPi * (x + kGeluCoefficient * x * x * x));
      return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * kSqrtTwoOverPi * (1.0 + 3.0 * kGeluCoefficient * x * x);
    }
    case Activation::silu: {
      // d/dx x s(x) = s (1 + x (1 - s)), s = 1 / (1 + e^-x).
      const double s = 1.0 / (1.0 + std::exp(-x));
      return s * (1.0 + x * (1.0 - s));
    }
  }
  throw std::invalid_argument("activation_backward: unknown activation " + std::to_string(static_cast<int>(a)));
}

void require_dropout_p(const char* function, float p) {
  if (!(p >= 0.0f && p < 1.0f)) {
    throw std::invalid_argument(std::string(function) + ": p is " + std::to_string(p) + ", must be in [0, 1)");
  }
}

}  // namespace

// ---- Linear -----------------------------------------------------------------------------------------

void linear_forward(const LinearShape& s, std::span<const float> x, std::span<const float> w,
                    std::span<const float> bias, std::span<float> y) {
  constexpr const char* kName = "linear_forward";
  require_linear_shape(kName, s);
  require_size(kName, "x", x, s.rows * s.in);
  require_size(kName, "w", w, s.out * s.in);
  const bool has_bias = wanted(kName, "bias", bias, s.out);
  require_size(kName, "y", y, s.rows * s.out);
  for (int64_t r = 0; r < s.rows; ++r) {
    const float* xr = x.data() + r * s.in;
    for (int64_t o = 0; o < s.out; ++o) {
      const float* wo = w.data() + o * s.in;
      double sum = has_bias ? static_cast<double>(bias[at(o)]) : 0.0;
      for (int64_t i = 0; i < s.in; ++i) sum += static_cast<double>(xr[i]) * static_cast<double>(wo[i]);
      y[at(r * s.out + o)] = static_cast<float>(sum);
    }
  }
}

void linear_backward(const LinearShape& s, std::span<const float> x, std::span<const float> w,
                     std::span<const float> dy, std::span<float> dx, std::span<float> dw, std::span<float> dbias) {
  constexpr const char* kName = "linear_backward";
  require_linear_shape(kName, s);
  require_size(kName, "x", x, s.rows * s.in);
  require_size(kName, "w", w, s.out * s.in);
  require_size(kName, "dy", dy, s.rows * s.out);
  const bool want_dx = wanted(kName, "dx", dx, s.rows * s.in);
  const bool want_dw = wanted(kName, "dw", dw, s.out * s.in);
  const bool want_dbias = wanted(kName, "dbias", dbias, s.out);
  const size_t wide = at(std::max(s.in, s.rows));
  mem::HostVector<double> sums(wide);
  if (want_dx) {
    // dx[r, :] = sum_o dy[r, o] w[o, :]: rows of w streamed into a double row accumulator.
    for (int64_t r = 0; r < s.rows; ++r) {
      std::fill(sums.begin(), sums.begin() + s.in, 0.0);
      for (int64_t o = 0; o < s.out; ++o) {
        const double g = dy[at(r * s.out + o)];
        const float* wo = w.data() + o * s.in;
        for (int64_t i = 0; i < s.in; ++i) sums[at(i)] += g * static_cast<double>(wo[i]);
      }
      for (int64_t i = 0; i < s.in; ++i) dx[at(r * s.in + i)] = static_cast<float>(sums[at(i)]);
    }
  }
  if (want_dw) {
    // dw[o, :] = sum_r dy[r, o] x[r, :].
    for (int64_t o = 0; o < s.out; ++o) {
      std::fill(sums.begin(), sums.begin() + s.in, 0.0);
      for (int64_t r = 0; r < s.rows; ++r) {
        const double g = dy[at(r * s.out + o)];
        const float* xr = x.data() + r * s.in;
        for (int64_t i = 0; i < s.in; ++i) sums[at(i)] += g * static_cast<double>(xr[i]);
      }
      for (int64_t i = 0; i < s.in; ++i) dw[at(o * s.in + i)] = static_cast<float>(sums[at(i)]);
    }
  }
  if (want_dbias) {
    for (int64_t o = 0; o < s.out; ++o) {
      double sum = 0.0;
      for (int64_t r = 0; r < s.rows; ++r) sum += static_cast<double>(dy[at(r * s.out + o)]);
      dbias[at(o)] = static_cast<float>(sum);
    }
  }
}

// ---- Activations --------------------------------------------------------------------------------------

void activation_forward(Activation a, std::span<const float> x, std::span<float> y) {
  require_size("activation_forward", "y", y, static_cast<int64_t>(x.size()));
  for (size_t i = 0; i < x.size(); ++i) y[i] = static_cast<float>(activation_value(a, x[i]));
}

void activation_backward(Activation a, std::span<const float> x, std::span<const float> dy, std::span<float> dx) {
  require_size("activation_backward", "dy", dy, static_cast<int64_t>(x.size()));
  require_size("activation_backward", "dx", dx, static_cast<int64_t>(x.size()));
  for (size_t i = 0; i < x.size(); ++i) {
    dx[i] = static_cast<float>(static_cast<double>(dy[i]) * activation_derivative(a, x[i]));
  }
}

// ---- LayerNorm ----------------------------------------------------------------------------------------

void layernorm_forward(const NormShape& s, std::span<const float> x, std::span<const float> gamma,
                       std::span<const float> beta, std::span<float> y, std::span<float> mean, std::span<float> rstd) {
  constexpr const char* kName = "layernorm_forward";
  require_norm_shape(kName, s);
  require_size(kName, "x", x, s.rows * s.cols);
  require_size(kName, "gamma", gamma, s.cols);
  require_size(kName, "beta", beta, s.cols);
  require_size(kName, "y", y, s.rows * s.cols);
  require_size(kName, "mean", mean, s.rows);
  require_size(kName, "rstd", rstd, s.rows);
  const auto n = static_cast<double>(s.cols);
  for (int64_t r = 0; r < s.rows; ++r) {
    const float* xr = x.data() + r * s.cols;
    double sum = 0.0;
    for (int64_t c = 0; c < s.cols; ++c) sum += xr[c];
    const double mu = sum / n;
    double squares = 0.0;
    for (int64_t c = 0; c < s.cols; ++c) squares += (xr[c] - mu) * (xr[c] - mu);
    const double inv = 1.0 / std::sqrt(squares / n + static_cast<double>(s.eps));
    for (int64_t c = 0; c < s.cols; ++c) {
      y[at(r * s.cols + c)] =
          static_cast<float>((xr[c] - mu) * inv * static_cast<double>(gamma[at(c)]) + static_cast<double>(beta[at(c)]));
    }
    mean[at(r)] = static_cast<float>(mu);
    rstd[at(r)] = static_cast<float>(inv);
  }
}

void layernorm_backward(const NormShape& s, std::span<const float> x, std::span<const float> gamma,
                        std::span<const float> mean, std::span<const float> rstd, std::span<const float> dy,
                        std::span<float> dx, std::span<float> dgamma, std::span<float> dbeta) {
  constexpr const char* kName = "layernorm_backward";
  require_norm_shape(kName, s);
  require_size(kName, "x", x, s.rows * s.cols);
  require_size(kName, "gamma", gamma, s.cols);
  require_size(kName, "mean", mean, s.rows);
  require_size(kName, "rstd", rstd, s.rows);
  require_size(kName, "dy", dy, s.rows * s.cols);
  const bool want_dx = wanted(kName, "dx", dx, s.rows * s.cols);
  const bool want_dgamma = wanted(kName, "dgamma", dgamma, s.cols);
  const bool want_dbeta = wanted(kName, "dbeta", dbeta, s.cols);
  const auto n = static_cast<double>(s.cols);
  mem::HostVector<double> dgamma_sum(want_dgamma ? at(s.cols) : 0), dbeta_sum(want_dbeta ? at(s.cols) : 0);
  for (int64_t r = 0; r < s.rows; ++r) {
    const float* xr = x.data() + r * s.cols;
    const float* dyr = dy.data() + r * s.cols;
    const double mu = mean[at(r)];
    const double inv = rstd[at(r)];
    if (want_dx) {
      double g_sum = 0.0, gx_sum = 0.0;
      for (int64_t c = 0; c < s.cols; ++c) {
        const double g = static_cast<double>(dyr[c]) * static_cast<double>(gamma[at(c)]);
        g_sum += g;
        gx_sum += g * ((xr[c] - mu) * inv);
      }
      const double g_mean = g_sum / n, gx_mean = gx_sum / n;
      for (int64_t c = 0; c < s.cols; ++c) {
        const double g = static_cast<double>(dyr[c]) * static_cast<double>(gamma[at(c)]);
        const double xhat = (xr[c] - mu) * inv;
        dx[at(r * s.cols + c)] = static_cast<float>(inv * (g - g_mean - xhat * gx_mean));
      }
    }
    for (int64_t c = 0; c < s.cols; ++c) {
      if (want_dgamma) dgamma_sum[at(c)] += static_cast<double>(dyr[c]) * ((xr[c] - mu) * inv);
      if (want_dbeta) dbeta_sum[at(c)] += dyr[c];
    }
  }
  for (int64_t c = 0; c < s.cols; ++c) {
    if (want_dgamma) dgamma[at(c)] = static_cast<float>(dgamma_sum[at(c)]);
    if (want_dbeta) dbeta[at(c)] = static_cast<float>(dbeta_sum[at(c)]);
  }
}

// ---- RMSNorm ------------------------------------------------------------------------------------------

void rmsnorm_forward(const NormShape& s, std::span<const float> x, std::span<const float> gamma, std::span<float> y,
                     std::span<float> rstd) {
  constexpr const char* kName = "rmsnorm_forward";
  require_norm_shape(kName, s);
  require_size(kName, "x", x, s.rows * s.cols);
  require_size(kName, "gamma", gamma, s.cols);
  require_size(kName, "y", y, s.rows * s.cols);
  require_size(kName, "rstd", rstd, s.rows);
  const auto n = static_cast<double>(s.cols);
  for (int64_t r = 0; r < s.rows; ++r) {
    const float* xr = x.data() + r * s.cols;
    double squares = 0.0;
    for (int64_t c = 0; c < s.cols; ++c) squares += static_cast<double>(xr[c]) * static_cast<double>(xr[c]);
    const double inv = 1.0 / std::sqrt(squares / n + static_cast<double>(s.eps));
    for (int64_t c = 0; c < s.cols; ++c) {
      y[at(r * s.cols + c)] = static_cast<float>(static_cast<double>(xr[c]) * inv * static_cast<double>(gamma[at(c)]));
    }
    rstd[at(r)] = static_cast<float>(inv);
  }
}

void rmsnorm_backward(const NormShape& s, std::span<const float> x, std::span<const float> gamma,
                      std::span<const float> rstd, std::span<const float> dy, std::span<float> dx,
                      std::span<float> dgamma) {
  constexpr const char* kName = "rmsnorm_backward";
  require_norm_shape(kName, s);
  require_size(kName, "x", x, s.rows * s.cols);
  require_size(kName, "gamma", gamma, s.cols);
  require_size(kName, "rstd", rstd, s.rows);
  require_size(kName, "dy", dy, s.rows * s.cols);
  const bool want_dx = wanted(kName, "dx", dx, s.rows * s.cols);
  const bool want_dgamma = wanted(kName, "dgamma", dgamma, s.cols);
  const auto n = static_cast<double>(s.cols);
  mem::HostVector<double> dgamma_sum(want_dgamma ? at(s.cols) : 0);
  for (int64_t r = 0; r < s.rows; ++r) {
    const float* xr = x.data() + r * s.cols;
    const float* dyr = dy.data() + r * s.cols;
    const double inv = rstd[at(r)];
    if (want_dx) {
      double gx_sum = 0.0;
      for (int64_t c = 0; c < s.cols; ++c) {
        gx_sum += static_cast<double>(dyr[c]) * static_cast<double>(gamma[at(c)]) * (static_cast<double>(xr[c]) * inv);
      }
      const double gx_mean = gx_sum / n;
      for (int64_t c = 0; c < s.cols; ++c) {
        const double g = static_cast<double>(dyr[c]) * static_cast<double>(gamma[at(c)]);
        dx[at(r * s.cols + c)] = static_cast<float>(inv * (g - static_cast<double>(xr[c]) * inv * gx_mean));
      }
    }
    if (want_dgamma) {
      for (int64_t c = 0; c < s.cols; ++c) {
        dgamma_sum[at(c)] += static_cast<double>(dyr[c]) * (static_cast<double>(xr[c]) * inv);
      }
    }
  }
  for (int64_t c = 0; c < s.cols && want_dgamma; ++c) dgamma[at(c)] = static_cast<float>(dgamma_sum[at(c)]);
}

// ---- Softmax cross-entropy ----------------------------------------------------------------------------

namespace {

void require_softmax_shape(const char* function, int64_t rows, int64_t classes, std::span<const float> logits,
                           std::span<const int32_t> labels) {
  if (rows <= 0) throw std::invalid_argument(std::string(function) + ": rows is " + std::to_string(rows) + ", must be >= 1");
  if (classes <= 0) {
    throw std::invalid_argument(std::string(function) + ": classes is " + std::to_string(classes) + ", must be >= 1");
  }
  require_size(function, "logits", logits, rows * classes);
  require_size(function, "labels", labels, rows);
  for (int64_t r = 0; r < rows; ++r) {
    const int32_t label = labels[at(r)];
    if (label < 0 || label >= classes) {
      throw std::invalid_argument(std::string(function) + ": label of row " + std::to_string(r) + " is " +
                                  std::to_string(label) + ", outside [0, " + std::to_string(classes) + ")");
    }
  }
}

// (row max, log sum exp(x - max)) in double.
struct RowLse {
  double max;
  double log_sum;
};

RowLse row_log_sum_exp(const float* row, int64_t classes) {
  double m = -std::numeric_limits<double>::infinity();
  for (int64_t c = 0; c < classes; ++c) m = std::max(m, static_cast<double>(row[c]));
  double sum = 0.0;
  for (int64_t c = 0; c < classes; ++c) sum += std::exp(static_cast<double>(row[c]) - m);
  return {m, std::log(sum)};
}

}  // namespace

double softmax_cross_entropy_forward(int64_t rows, int64_t classes, std::span<const float> logits,
                                     std::span<const int32_t> labels, std::span<float> row_losses) {
  constexpr const char* kName = "softmax_cross_entropy_forward";
  require_softmax_shape(kName, rows, classes, logits, labels);
  const bool want_rows = wanted(kName, "row_losses", row_losses, rows);
  double total = 0.0;
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = logits.data() + r * classes;
    const RowLse lse = row_log_sum_exp(row, classes);
    // (max - x[label]) first: both are stored values, so the difference of large logits stays exact-ish.
    const double loss = (lse.max - static_cast<double>(row[labels[at(r)]])) + lse.log_sum;
    if (want_rows) row_losses[at(r)] = static_cast<float>(loss);
    total += loss;
  }
  return total / static_cast<double>(rows);
}

void softmax_cross_entropy_backward(int64_t rows, int64_t classes, std::span<const float> logits,
                                    std::span<const int32_t> labels, float scale, std::span<float> dlogits) {
  constexpr const char* kName = "softmax_cross_entropy_backward";
  require_softmax_shape(kName, rows, classes, logits, labels);
  if (!std::isfinite(scale)) throw std::invalid_argument(std::string(kName) + ": scale is " + std::to_string(scale) + ", must be finite");
  require_size(kName, "dlogits", dlogits, rows * classes);
  const double factor = static_cast<double>(scale) / static_cast<double>(rows);
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = logits.data() + r * classes;
    const RowLse lse = row_log_sum_exp(row, classes);
    const int32_t label = labels[at(r)];
    for (int64_t c = 0; c < classes; ++c) {
      const double p = std::exp(static_cast<double>(row[c]) - lse.max - lse.log_sum);
      dlogits[at(r * classes + c)] = static_cast<float>((p - (c == label ? 1.0 : 0.0)) * factor);
    }
  }
}

// ---- Dropout ------------------------------------------------------------------------------------------

float dropout_scale(float p) {
  require_dropout_p("dropout_scale", p);
  return static_cast<float>(1.0 / (1.0 - static_cast<double>(p)));
}

bool dropout_keep(float p, uint64_t seed, uint32_t key, uint64_t index) {
  return rng::uniform01(rng::bits_at(seed, key, rng::Stream::dropout, index)) >= p;
}

void dropout_forward(float p, uint64_t seed, uint32_t key, std::span<const float> x, std::span<float> y) {
  require_dropout_p("dropout_forward", p);
  require_size("dropout_forward", "y", y, static_cast<int64_t>(x.size()));
  const float scale = dropout_scale(p);
  for (size_t i = 0; i < x.size(); ++i) y[i] = dropout_keep(p, seed, key, i) ? x[i] * scale : 0.0f;
}

void dropout_backward(float p, uint64_t seed, uint32_t key, std::span<const float> dy, std::span<float> dx) {
  require_dropout_p("dropout_backward", p);
  require_size("dropout_backward", "dx", dx, static_cast<int64_t>(dy.size()));
  const float scale = dropout_scale(p);
  for (size_t i = 0; i < dy.size(); ++i) dx[i] = dropout_keep(p, seed, key, i) ? dy[i] * scale : 0.0f;
}

}  // namespace gauge::reference::nn
