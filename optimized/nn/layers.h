// CUDA layers with explicit forward and backward passes: the same semantics as reference/nn/layers.h
// (which defines them), implemented on their own with cuBLASLt and fused kernels. Plain C++ header:
// no CUDA types, so host-only code (case declarations, the checkpointing and mixed-precision
// helpers) can include it.
//
// Usage (every call only enqueues work on `stream`; nothing synchronizes or allocates):
//
//   namespace nn = gauge::optimized::nn;
//   nn::LinearPlan fc(session.blas_lt(), {rows, in, out}, DType::bf16, /*has_bias=*/true);
//   void* ws = session.workspace(fc.workspace_bytes());           // once; reusable by every call
//   fc.forward(x, w, bias, y, ws, stream);                         // y = x w^T + b
//   nn::bias_activation_forward(nn::Activation::gelu_tanh, {rows, out}, DType::bf16, y, nullptr, h, stream);
//   nn::dropout_forward(p, seed, /*key=*/layer, rows * out, DType::bf16, h, h_dropped, stream);
//   ... loss ...
//   nn::dropout_backward(p, seed, layer, rows * out, DType::bf16, dh_dropped, dh, stream);
//   nn::activation_backward(nn::Activation::gelu_tanh, rows * out, DType::bf16, y, dh, dy, stream);
//   fc.backward(x, w, dy, dx, dw_f32, dbias_f32, ws, stream);
//
// Conventions
// - Row-major, as the reference: x [rows, in], weights [out, in] (y = x W^T + b), norms over the last
//   dimension of [rows, cols].
// - Activation storage: DType::f32, bf16 or f16 for activations and their gradients (x, y, dx, dy,
//   logits, dlogits) and for the weights a layer reads (w, bias, gamma, beta: in a mixed-precision
//   recipe they are bf16/fp16 copies of fp32 master weights). Math is fp32 everywhere (fp32
//   accumulation, fp32 statistics); stores round to nearest even.
// - Parameter gradients (dw, dbias, dgamma, dbeta) and saved statistics (mean, rstd, row losses) are
//   always fp32, ready for fp32 master weights.
// - Determinism: every result is a function of the inputs and the shape only; no float atomics.
//   Reductions over rows (dbias, dgamma, dbeta) use fixed two-stage trees (per-block partials, then a
//   fixed-order column reduction), so gradients are bit-identical run to run on one device.
// - Optional outputs may be null (dx of a first layer, dbias without a bias, ...), as the reference's
//   empty spans.
// - Alignment: every pointer must be 16-byte aligned (cudaMalloc / the harness pool always are);
//   otherwise RuntimeFailure. Ragged sizes are accepted (cols not a multiple of 4/8, one row; the norms
//   cap cols, see below); rows whose length keeps
//   16-byte alignment take the vector path, others a scalar path with the same results.
// - Bad arguments (negative sizes, unsupported dtype, p outside [0, 1), a non-finite loss scale)
//   throw gauge::UsageError; CUDA and cuBLASLt failures throw gauge::RuntimeFailure.
// - Some kernels need scratch ("workspace"): pass a device buffer of at least the *_workspace_bytes()
//   of the call; it may be reused by the next call on the same stream.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "harness/dtype.h"
#include "harness/stream.h"
#include "reference/nn/layers.h"  // the plain shape structs and the Activation enum only

struct cublasLtContext;

namespace gauge::optimized::nn {

using gauge::reference::nn::Activation;
using gauge::reference::nn::LinearShape;
using gauge::reference::nn::NormShape;

// ---- Linear (cuBLASLt) --------------------------------------------------------------------------------
// Forward: y = x W^T (+ bias, fused with cuBLASLt's BIAS epilogue); x, w, bias, y in `storage`.
// Backward: dx = dy W (storage), dw = dy^T x (fp32), dbias = column sums of dy (fp32, deterministic
// two-stage reduction). fp32 storage computes in true fp32 (CUBLAS_COMPUTE_32F, no TF32); bf16/fp16
// storage uses tensor cores with fp32 accumulation.
// in == 0 (no input features) is a valid layer, as in the reference: y = bias broadcast over the rows
// (zeros without a bias), dbias = column sums of dy, and dx [rows, 0], dw [out, 0] have no elements;
// x and w may then be null. No cuBLASLt call is made for it (no k = 0 matmul).
class LinearPlan {
 public:
  // Creates the cuBLASLt descriptors and picks algorithms (host only; no device work). UsageError for
  // negative sizes or a dtype other than f32/bf16/f16; RuntimeFailure when cuBLASLt has no algorithm.
  LinearPlan(cublasLtContext* handle, const LinearShape& shape, DType storage, bool has_bias);
  ~LinearPlan();
  LinearPlan(const LinearPlan&) = delete;
  LinearPlan& operator=(const LinearPlan&) = delete;

  // Scratch that forward and backward need (cuBLASLt workspace + dbias partials).
  size_t workspace_bytes() const;
  const LinearShape& shape() const;
  DType storage() const;

  void forward(const void* x, const void* w, const void* bias, void* y, void* workspace, StreamHandle stream) const;
  // dx, dw, dbias may each be null (skipped).
  void backward(const void* x, const void* w, const void* dy, void* dx, float* dw, float* dbias, void* workspace,
                StreamHandle stream) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// ---- Column sums (deterministic) ------------------------------------------------------------------------
// out[c] = sum_r m[r, c] over a [rows, cols] matrix in `storage`, fp32 accumulation, fixed order.
size_t column_sum_workspace_bytes(int64_t rows, int64_t cols);
void column_sum(int64_t rows, int64_t cols, DType storage, const void* m, float* out, void* workspace,
                StreamHandle stream);

// ---- Pointwise ----------------------------------------------------------------------------------------
// y[r, c] = act(x[r, c] + bias[c]) (bias may be null: act(x)); x + bias is one fp32 addition, act is
// evaluated in fp32 (gelu_tanh and silu as x * sigmoid(.) so that no cancellation occurs).
// `shape` is {rows, cols}; eps unused.
struct PointwiseShape {
  int64_t rows = 0;
  int64_t cols = 0;
};
void bias_activation_forward(Activation a, const PointwiseShape& shape, DType storage, const void* x,
                             const void* bias, void* y, StreamHandle stream);
// dx = dy * act'(x) elementwise, x the activation's input (after the bias).
void activation_backward(Activation a, int64_t n, DType storage, const void* x, const void* dy, void* dx,
                         StreamHandle stream);
// The mask of reference/nn/layers.h bit for bit: element i is kept iff
// uniform01(bits_at(seed, key, Stream::dropout, i)) >= p; y = fp32(x * dropout_scale(p)) or +0.
void dropout_forward(float p, uint64_t seed, uint32_t key, int64_t n, DType storage, const void* x, void* y,
                     StreamHandle stream);
void dropout_backward(float p, uint64_t seed, uint32_t key, int64_t n, DType storage, const void* dy, void* dx,
                      StreamHandle stream);

// ---- Normalizations -------------------------------------------------------------------------------------
// The reference's formulas with fp32 statistics. cols up to kMaxNormCols = 8192 when cols is a multiple
// of the 16-byte vector (4 fp32, 8 bf16/fp16 elements), up to 4096 otherwise (UsageError beyond).
inline constexpr int64_t kMaxNormCols = 8192;
// mean, rstd: fp32 [rows] (both required: backward reads them).
void layernorm_forward(const NormShape& s, DType storage, const void* x, const void* gamma, const void* beta, void* y,
                       float* mean, float* rstd, StreamHandle stream);
size_t norm_backward_workspace_bytes(const NormShape& s);
// dx (storage) may be null; dgamma, dbeta (fp32) may be null.
void layernorm_backward(const NormShape& s, DType storage, const void* x, const void* gamma, const float* mean,
                        const float* rstd, const void* dy, void* dx, float* dgamma, float* dbeta, void* workspace,
                        StreamHandle stream);
void rmsnorm_forward(const NormShape& s, DType storage, const void* x, const void* gamma, void* y, float* rstd,
                     StreamHandle stream);
void rmsnorm_backward(const NormShape& s, DType storage, const void* x, const void* gamma, const float* rstd,
                      const void* dy, void* dx, float* dgamma, void* workspace, StreamHandle stream);

// ---- Softmax cross-entropy (labels int32, one row per block, online max / log-sum-exp) --------------
// row_losses: fp32 [rows] (required); mean_loss: fp32 [1], the mean over rows in a fixed order (may be
// null). A label outside [0, classes) gives a NaN row loss (the device cannot throw).
void softmax_cross_entropy_forward(int64_t rows, int64_t classes, DType storage, const void* logits,
                                   const int32_t* labels, float* row_losses, float* mean_loss, StreamHandle stream);
// dlogits = (softmax(logits) - onehot(label)) * scale / rows, in `storage`.
void softmax_cross_entropy_backward(int64_t rows, int64_t classes, DType storage, const void* logits,
                                    const int32_t* labels, float scale, void* dlogits, StreamHandle stream);

}  // namespace gauge::optimized::nn
