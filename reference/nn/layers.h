// Plain CPU layers with explicit forward and backward passes (no autograd): the definition of correct
// for gauge's nn layers, reused by the mixed-precision recipes, activation checkpointing, LoRA and the
// parallelism components. The CUDA side (optimized/nn) implements the same semantics on its own.
//
// Conventions
// - Row-major. A batch is `rows` vectors of `cols` (or `in`) features. Linear weights are [out, in]
//   (PyTorch's layout): y = x W^T + b.
// - Every function overwrites its outputs (never accumulates into them); an empty span for an optional
//   output (dx of the first layer, a bias gradient) skips computing it.
// - Sums and statistics accumulate in double and are rounded once to fp32: this code defines truth,
//   speed is secondary. Values are fp32; lower-precision recipes round at their storage points with
//   reference/precision/casts.h.
// - Wrong span sizes throw std::invalid_argument naming the operand and both sizes.
#pragma once

#include <cstdint>
#include <span>

namespace gauge::reference::nn {

// ---- Linear: y[r, o] = sum_i x[r, i] * w[o, i] + bias[o] -----------------------------------------
struct LinearShape {
  int64_t rows = 0;
  int64_t in = 0;
  int64_t out = 0;
};
void linear_forward(const LinearShape& s, std::span<const float> x, std::span<const float> w,
                    std::span<const float> bias /* empty: no bias */, std::span<float> y);
// dx = dy W  [rows, in];  dw = dy^T x  [out, in];  dbias = column sums of dy  [out].
void linear_backward(const LinearShape& s, std::span<const float> x, std::span<const float> w,
                     std::span<const float> dy, std::span<float> dx, std::span<float> dw, std::span<float> dbias);

// ---- Pointwise activations -----------------------------------------------------------------------
// relu(x) = max(x, 0) (derivative 0 at x = 0);
// gelu_tanh(x) = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))  (the "approximate='tanh'" GELU);
// silu(x) = x / (1 + exp(-x)).
// Evaluated in double, rounded once to fp32.
enum class Activation : uint8_t { relu, gelu_tanh, silu };
void activation_forward(Activation a, std::span<const float> x, std::span<float> y);
// dx = dy * a'(x), with x the forward input.
void activation_backward(Activation a, std::span<const float> x, std::span<const float> dy, std::span<float> dx);

// ---- Normalizations (statistics always in fp32 storage, computed in double) -----------------------
struct NormShape {
  int64_t rows = 0;
  int64_t cols = 0;
  float eps = 1e-5f;
};
// LayerNorm over the last dimension: mean = sum x / cols, var = sum (x - mean)^2 / cols (biased),
// rstd = 1 / sqrt(var + eps), y = (x - mean) * rstd * gamma + beta. Saves mean and rstd ([rows], fp32).
void layernorm_forward(const NormShape& s, std::span<const float> x, std::span<const float> gamma,
                       std::span<const float> beta, std::span<float> y, std::span<float> mean, std::span<float> rstd);
// From the saved (fp32) mean and rstd: xhat = (x - mean) rstd, g = dy * gamma,
// dx = rstd (g - mean_c(g) - xhat mean_c(g xhat)); dgamma = sum_r dy xhat; dbeta = sum_r dy.
void layernorm_backward(const NormShape& s, std::span<const float> x, std::span<const float> gamma,
                        std::span<const float> mean, std::span<const float> rstd, std::span<const float> dy,
                        std::span<float> dx, std::span<float> dgamma, std::span<float> dbeta);
// RMSNorm: rstd = 1 / sqrt(sum x^2 / cols + eps), y = x * rstd * gamma. Saves rstd ([rows], fp32).
void rmsnorm_forward(const NormShape& s, std::span<const float> x, std::span<const float> gamma, std::span<float> y,
                     std::span<float> rstd);
// xhat = x rstd, g = dy * gamma: dx = rstd (g - xhat mean_c(g xhat)); dgamma = sum_r dy xhat.
void rmsnorm_backward(const NormShape& s, std::span<const float> x, std::span<const float> gamma,
                      std::span<const float> rstd, std::span<const float> dy, std::span<float> dx,
                      std::span<float> dgamma);

// ---- Softmax cross-entropy with integer class labels, mean over rows ------------------------------
// loss_r = logsumexp(logits_r) - logits_r[label_r] (log-sum-exp with the row max subtracted);
// returns the mean over rows in double; per-row losses go to `row_losses` when it is not empty.
// A label outside [0, classes) throws std::invalid_argument naming the row.
double softmax_cross_entropy_forward(int64_t rows, int64_t classes, std::span<const float> logits,
                                     std::span<const int32_t> labels, std::span<float> row_losses);
// dlogits[r, c] = (softmax(logits_r)[c] - [c == label_r]) * scale / rows. `scale` is the loss scale
// of a mixed-precision recipe (1 otherwise): the gradient of scale * mean loss.
void softmax_cross_entropy_backward(int64_t rows, int64_t classes, std::span<const float> logits,
                                    std::span<const int32_t> labels, float scale, std::span<float> dlogits);

// ---- Dropout (inverted): kept elements are scaled by 1 / (1 - p), dropped ones are 0 --------------
// Element i of the mask of (seed, key) is kept iff
//     rng::uniform01(rng::bits_at(seed, key, rng::Stream::dropout, i)) >= p        (harness/philox.h)
// `key` names the layer (a block index): a recomputation in backward draws the same mask from
// (seed, key, i) alone, with no saved RNG state. The scale is the fp32 value dropout_scale(p) =
// fp32(1 / (1 - p)) computed in double, and a kept element is y = fp32(x * scale) (one rounding).
// 0 <= p < 1; p == 0 is the identity.
float dropout_scale(float p);
bool dropout_keep(float p, uint64_t seed, uint32_t key, uint64_t index);
void dropout_forward(float p, uint64_t seed, uint32_t key, std::span<const float> x, std::span<float> y);
// dx = dy * scale where kept, 0 where dropped (the same mask).
void dropout_backward(float p, uint64_t seed, uint32_t key, std::span<const float> dy, std::span<float> dx);

}  // namespace gauge::reference::nn
