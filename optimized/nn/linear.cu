// Linear forward and backward on cuBLASLt.
//
// ---- Napkin math ---------------------------------------------------------------------------------------
// Forward 2 rows in out flops; backward 4 rows in out (dx and dw). 8192 x 4096 x 4096: 275 GFLOP
// forward. bf16 / fp16 storage runs on tensor cores with fp32 accumulation (H100 SXM dense ~989 TFLOP/s:
// ~0.3 ms at peak, target >= 70% of peak); fp32 storage runs CUBLAS_COMPUTE_32F, true fp32 FMA on the
// CUDA cores (~67 TFLOP/s: ~4 ms), chosen over TF32 so that the fp32 accumulation rule holds.
// Compute-bound: arithmetic intensity 2 m n k / (bytes (m k + k n + m n)) ~ 1365 flop/B at 4096^3 bf16.
// dbias reads dy once more (columns.cu): +rows out elements of traffic, ~1% of the backward's time.
// in == 0 (no input features): y = bias broadcast over the rows (or 0), no matmul; a 16-byte copy per
// thread step, memory-bound: 8192 x 4096 bf16 writes 67 MB -> 20 us at 3.35 TB/s. Its backward is
// dbias alone (dx and dw have no elements).
//
// Layout: the row-major [rows, in] x and [out, in] w are cuBLASLt's column-major x^T [in, rows] and
// w^T [in, out]:
//   y^T [out, rows]  = (w^T)^T x^T        A = w  (op T), B = x  (op N), m = out, n = rows, k = in
//   dx^T [in, rows]  = w^T dy^T           A = w  (op N), B = dy (op N), m = in,  n = rows, k = out
//   dw^T [in, out]   = x^T dy             A = x  (op N), B = dy (op T), m = in,  n = out,  k = rows
// The bias rides the BIAS epilogue (a vector of m = out elements, in the storage dtype: cuBLASLt's
// default bias type is D's). dw is written in fp32 straight from the fp32 accumulators (for fp32 master
// weights); dbias is the deterministic column sum of dy.
// cuBLASLt is never asked for k = 0 (in == 0): its documentation (cublasLt.h, the cuBLAS guide) defines
// no k = 0 matmul and says nothing of the BIAS epilogue over an empty product, so that shape is served
// here: y = bias broadcast (bit copies: an empty sum plus the bias is the bias) or zeros.
#include <cublasLt.h>

#include <string>
#include <type_traits>

#include "optimized/nn/device.cuh"
#include "optimized/nn/layers.h"

namespace gauge::optimized::nn {
namespace {

// cuBLAS's recommended workspace on Hopper; the heuristic is told the same cap.
constexpr size_t kLtWorkspaceBytes = size_t{32} << 20;
constexpr uint32_t kPointerAlignment = 16;  // the alignment layers.h promises (and checks)

void check(cublasStatus_t status, const char* what) {
  if (status != CUBLAS_STATUS_SUCCESS) {
    throw RuntimeFailure(std::string("nn linear: ") + what + " failed: " + cublasLtGetStatusString(status));
  }
}

cudaDataType_t cuda_type(DType t) {
  switch (t) {
    case DType::f32:
      return CUDA_R_32F;
    case DType::bf16:
      return CUDA_R_16BF;
    case DType::f16:
      return CUDA_R_16F;
    default:
      throw UsageError("nn linear: storage dtype " + std::string(dtype_name(t)) + " is not f32, bf16 or f16");
  }
}

struct DescDeleter {
  void operator()(cublasLtMatmulDesc_t p) const { (void)cublasLtMatmulDescDestroy(p); }
};
struct LayoutDeleter {
  void operator()(cublasLtMatrixLayout_t p) const { (void)cublasLtMatrixLayoutDestroy(p); }
};
using DescPtr = std::unique_ptr<std::remove_pointer_t<cublasLtMatmulDesc_t>, DescDeleter>;
using LayoutPtr = std::unique_ptr<std::remove_pointer_t<cublasLtMatrixLayout_t>, LayoutDeleter>;

LayoutPtr make_layout(cudaDataType_t type, int64_t rows, int64_t cols, int64_t ld) {
  cublasLtMatrixLayout_t layout = nullptr;
  check(cublasLtMatrixLayoutCreate(&layout, type, static_cast<uint64_t>(rows), static_cast<uint64_t>(cols), ld),
        "cublasLtMatrixLayoutCreate");
  return LayoutPtr(layout);
}

template <class V>
void set(cublasLtMatmulDesc_t desc, cublasLtMatmulDescAttributes_t attribute, const V& value, const char* what) {
  check(cublasLtMatmulDescSetAttribute(desc, attribute, &value, sizeof value), what);
}

// One matmul D = op(A) op(B) with its descriptors and the heuristic's algorithm.
struct Gemm {
  DescPtr desc;
  LayoutPtr a, b, d;
  cublasLtMatmulAlgo_t algo{};
  size_t workspace = 0;

  void build(cublasLtHandle_t handle, cublasOperation_t op_a, cublasOperation_t op_b, cudaDataType_t a_type,
             int64_t a_rows, int64_t a_cols, cudaDataType_t b_type, int64_t b_rows, int64_t b_cols,
             cudaDataType_t d_type, int64_t d_rows, int64_t d_cols, bool bias, const char* name) {
    cublasLtMatmulDesc_t raw = nullptr;
    check(cublasLtMatmulDescCreate(&raw, CUBLAS_COMPUTE_32F, CUDA_R_32F), "cublasLtMatmulDescCreate");
    desc.reset(raw);
    set(raw, CUBLASLT_MATMUL_DESC_TRANSA, op_a, "set TRANSA");
    set(raw, CUBLASLT_MATMUL_DESC_TRANSB, op_b, "set TRANSB");
    if (bias) {
      set(raw, CUBLASLT_MATMUL_DESC_EPILOGUE, CUBLASLT_EPILOGUE_BIAS, "set EPILOGUE");
      // The heuristic infers the bias alignment it may assume from this pointer's value (it never
      // dereferences it); a null pointer would let it pick an algorithm that needs more than the 16
      // bytes layers.h promises. forward() sets the real pointer before every matmul.
      const void* promised_alignment = reinterpret_cast<const void*>(uintptr_t{kPointerAlignment});
      set(raw, CUBLASLT_MATMUL_DESC_BIAS_POINTER, promised_alignment, "set BIAS_POINTER (alignment)");
    }
    a = make_layout(a_type, a_rows, a_cols, a_rows);
    b = make_layout(b_type, b_rows, b_cols, b_rows);
    d = make_layout(d_type, d_rows, d_cols, d_rows);

    cublasLtMatmulPreference_t preference = nullptr;
    check(cublasLtMatmulPreferenceCreate(&preference), "cublasLtMatmulPreferenceCreate");
    const auto destroy = [&] { (void)cublasLtMatmulPreferenceDestroy(preference); };
    try {
      const uint64_t max_workspace = kLtWorkspaceBytes;
      check(cublasLtMatmulPreferenceSetAttribute(preference, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &max_workspace,
                                                 sizeof max_workspace),
            "set MAX_WORKSPACE_BYTES");
      for (const auto attribute : {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                                   CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES}) {
        check(cublasLtMatmulPreferenceSetAttribute(preference, attribute, &kPointerAlignment, sizeof kPointerAlignment),
              "set MIN_ALIGNMENT");
      }
      // Split-K only with fp32 partials: the INPLACE and OUTPUT_TYPE schemes add the K slices in D's type
      // (cublasLt.h), i.e. extra bf16/fp16 roundings beyond the one store of the fp32 accumulators that
      // layers.h promises (and the bf16 points' faithful rule assumes). Unsplit algorithms (scheme NONE)
      // always pass the mask.
      const uint32_t fp32_reductions = CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE;
      check(cublasLtMatmulPreferenceSetAttribute(preference, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK,
                                                 &fp32_reductions, sizeof fp32_reductions),
            "set REDUCTION_SCHEME_MASK");
      cublasLtMatmulHeuristicResult_t result{};
      int found = 0;
      check(cublasLtMatmulAlgoGetHeuristic(handle, desc.get(), a.get(), b.get(), d.get(), d.get(), preference, 1,
                                           &result, &found),
            "cublasLtMatmulAlgoGetHeuristic");
      if (found == 0) throw RuntimeFailure(std::string("nn linear: cuBLASLt has no algorithm for ") + name);
      algo = result.algo;
      workspace = result.workspaceSize;
    } catch (...) {
      destroy();
      throw;
    }
    destroy();
  }

  void run(cublasLtHandle_t handle, const void* a_ptr, const void* b_ptr, void* d_ptr, void* ws,
           cudaStream_t stream, const char* name) const {
    const float alpha = 1.0f, beta = 0.0f;
    check(cublasLtMatmul(handle, desc.get(), &alpha, a_ptr, a.get(), b_ptr, b.get(), &beta, d_ptr, d.get(), d_ptr,
                         d.get(), &algo, ws, workspace, stream),
          name);
  }
};

// y[r, :] = bias for every row, as raw bits (Word: the element's size; V words per 16-byte step or
// one per step on the scalar path, when rows do not all start 16-byte aligned).
template <class Word, int V>
__global__ void __launch_bounds__(launch::kPointwiseThreads)
    broadcast_rows_kernel(const Word* __restrict__ bias, Word* __restrict__ y, int64_t vectors, int64_t cols) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t v = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; v < vectors; v += stride) {
    const int64_t i = v * V;
    if constexpr (V * sizeof(Word) == 16) {
      // cols % V == 0 on this path: the vector stays inside one row and its bias slice is 16-byte aligned.
      *reinterpret_cast<uint4*>(y + i) = *reinterpret_cast<const uint4*>(bias + i % cols);
    } else {
      y[i] = bias[i % cols];
    }
  }
}

template <class Word>
void launch_broadcast_rows(int64_t rows, int64_t cols, const void* bias, void* y, cudaStream_t stream) {
  constexpr int kV = launch::vector_width(sizeof(Word));
  const int v = launch::broadcast_vector(cols, sizeof(Word));
  const int64_t vectors = rows * cols / v;
  const auto blocks = static_cast<unsigned>(launch::pointwise_blocks(rows * cols, v));
  const auto* b = static_cast<const Word*>(bias);
  auto* out = static_cast<Word*>(y);
  if (v == kV) {
    broadcast_rows_kernel<Word, kV><<<blocks, launch::kPointwiseThreads, 0, stream>>>(b, out, vectors, cols);
  } else {
    broadcast_rows_kernel<Word, 1><<<blocks, launch::kPointwiseThreads, 0, stream>>>(b, out, vectors, cols);
  }
  detail::check_launch("linear forward: bias broadcast (in == 0)");
}

}  // namespace

struct LinearPlan::Impl {
  cublasLtHandle_t handle = nullptr;
  LinearShape shape;
  DType storage = DType::f32;
  bool has_bias = false;
  bool empty = false;      // rows == 0 or out == 0: nothing to multiply
  bool no_inputs = false;  // in == 0 (and not empty): y = bias, dbias = column sums of dy, no matmul
  Gemm forward, backward_dx, backward_dw;
  size_t lt_bytes = 0;       // cuBLASLt workspace, rounded up to 256 B
  size_t partial_bytes = 0;  // dbias partials
};

LinearPlan::LinearPlan(cublasLtContext* handle, const LinearShape& shape, DType storage, bool has_bias)
    : impl_(std::make_unique<Impl>()) {
  constexpr const char* kName = "LinearPlan";
  detail::require_non_negative(kName, "rows", shape.rows);
  detail::require_non_negative(kName, "in", shape.in);
  detail::require_non_negative(kName, "out", shape.out);
  detail::require_storage(kName, storage);
  if (handle == nullptr) throw UsageError("LinearPlan: null cuBLASLt handle");
  Impl& p = *impl_;
  p.handle = handle;
  p.shape = shape;
  p.storage = storage;
  p.has_bias = has_bias;
  p.empty = shape.rows == 0 || shape.out == 0;
  if (p.empty) return;
  if (shape.in == 0) {
    p.no_inputs = true;
    p.partial_bytes = column_sum_workspace_bytes(shape.rows, shape.out);
    return;
  }
  const cudaDataType_t t = cuda_type(storage);
  const int64_t rows = shape.rows, in = shape.in, out = shape.out;
  p.forward.build(handle, CUBLAS_OP_T, CUBLAS_OP_N, t, in, out, t, in, rows, t, out, rows, has_bias, "linear forward");
  p.backward_dx.build(handle, CUBLAS_OP_N, CUBLAS_OP_N, t, in, out, t, out, rows, t, in, rows, false,
                      "linear backward dx");
  p.backward_dw.build(handle, CUBLAS_OP_N, CUBLAS_OP_T, t, in, rows, t, out, rows, CUDA_R_32F, in, out, false,
                      "linear backward dw");
  const size_t lt = std::max({p.forward.workspace, p.backward_dx.workspace, p.backward_dw.workspace});
  p.lt_bytes = (lt + 255) / 256 * 256;
  p.partial_bytes = column_sum_workspace_bytes(rows, out);
}

LinearPlan::~LinearPlan() = default;

size_t LinearPlan::workspace_bytes() const { return impl_->lt_bytes + impl_->partial_bytes; }
const LinearShape& LinearPlan::shape() const { return impl_->shape; }
DType LinearPlan::storage() const { return impl_->storage; }

void LinearPlan::forward(const void* x, const void* w, const void* bias, void* y, void* workspace,
                         StreamHandle stream) const {
  constexpr const char* kName = "linear forward";
  const Impl& p = *impl_;
  if (p.empty) return;
  // With in == 0, x and w have no elements (null is fine).
  if (y == nullptr || (!p.no_inputs && (x == nullptr || w == nullptr))) throw UsageError("linear forward: null x, w or y");
  if (p.has_bias != (bias != nullptr)) {
    throw UsageError(std::string("linear forward: the plan was made ") + (p.has_bias ? "with" : "without") +
                     " a bias, the call passes " + (bias != nullptr ? "one" : "none"));
  }
  if (p.lt_bytes > 0 && workspace == nullptr) throw UsageError("linear forward: null workspace");
  for (const auto& [name, ptr] : {std::pair{"x", x}, {"w", w}, {"bias", bias}, {"y", static_cast<const void*>(y)},
                                  {"workspace", static_cast<const void*>(workspace)}}) {
    detail::require_aligned(kName, name, ptr);
  }
  const auto st = static_cast<cudaStream_t>(stream);
  if (p.no_inputs) {
    const int64_t rows = p.shape.rows, out = p.shape.out;
    if (!p.has_bias) {
      // The empty sum: +0 in every storage format is all-zero bits.
      detail::check_cuda(cudaMemsetAsync(y, 0, static_cast<size_t>(rows * out) * dtype_size(p.storage), st),
                         "linear forward: zero y (in == 0)");
    } else if (dtype_size(p.storage) == 4) {
      launch_broadcast_rows<uint32_t>(rows, out, bias, y, st);
    } else {
      launch_broadcast_rows<uint16_t>(rows, out, bias, y, st);
    }
    return;
  }
  if (p.has_bias) set(p.forward.desc.get(), CUBLASLT_MATMUL_DESC_BIAS_POINTER, bias, "set BIAS_POINTER");
  p.forward.run(p.handle, w, x, y, workspace, st, "cublasLtMatmul (linear forward)");
}

void LinearPlan::backward(const void* x, const void* w, const void* dy, void* dx, float* dw, float* dbias,
                          void* workspace, StreamHandle stream) const {
  constexpr const char* kName = "linear backward";
  const Impl& p = *impl_;
  const auto st = static_cast<cudaStream_t>(stream);
  if (p.empty) {
    // rows == 0: dw and dbias are empty sums; out == 0: dx is an empty sum.
    if (p.shape.out > 0 && dbias != nullptr) detail::reduce_partials(nullptr, 0, p.shape.out, dbias, st);
    if (dw != nullptr && p.shape.out * p.shape.in > 0) {
      detail::check_cuda(cudaMemsetAsync(dw, 0, static_cast<size_t>(p.shape.out * p.shape.in) * sizeof(float), st),
                         "linear backward: zero dw");
    }
    if (dx != nullptr && p.shape.rows * p.shape.in > 0) {
      detail::check_cuda(cudaMemsetAsync(dx, 0, static_cast<size_t>(p.shape.rows * p.shape.in) * dtype_size(p.storage), st),
                         "linear backward: zero dx");
    }
    return;
  }
  if (p.no_inputs) {
    // in == 0: dx [rows, 0] and dw [out, 0] have no elements; dbias is all there is.
    if (dbias == nullptr) return;
    if (dy == nullptr || workspace == nullptr) throw UsageError("linear backward: null dy or workspace");
    for (const auto& [name, ptr] : {std::pair{"dy", dy}, {"dbias", static_cast<const void*>(dbias)},
                                    {"workspace", static_cast<const void*>(workspace)}}) {
      detail::require_aligned(kName, name, ptr);
    }
    column_sum(p.shape.rows, p.shape.out, p.storage, dy, dbias, workspace, stream);
    return;
  }
  if (dy == nullptr) throw UsageError("linear backward: null dy");
  if (dx != nullptr && w == nullptr) throw UsageError("linear backward: dx needs w");
  if (dw != nullptr && x == nullptr) throw UsageError("linear backward: dw needs x");
  if ((p.lt_bytes > 0 || dbias != nullptr) && workspace == nullptr) throw UsageError("linear backward: null workspace");
  for (const auto& [name, ptr] :
       {std::pair{"x", x}, {"w", w}, {"dy", dy}, {"dx", static_cast<const void*>(dx)}, {"dw", static_cast<const void*>(dw)},
        {"dbias", static_cast<const void*>(dbias)}, {"workspace", static_cast<const void*>(workspace)}}) {
    detail::require_aligned(kName, name, ptr);
  }
  if (dx != nullptr) p.backward_dx.run(p.handle, w, dy, dx, workspace, st, "cublasLtMatmul (linear backward dx)");
  if (dw != nullptr) p.backward_dw.run(p.handle, x, dy, dw, workspace, st, "cublasLtMatmul (linear backward dw)");
  if (dbias != nullptr) {
    column_sum(p.shape.rows, p.shape.out, p.storage, dy, dbias, static_cast<char*>(workspace) + p.lt_bytes, stream);
  }
}

}  // namespace gauge::optimized::nn
