// cuBLASLt GEMMs: fp32 (FMA), tf32, fp16, bf16 (fp32 accumulation) and fp8 with per-tensor scales.
//
// Napkin math (H100 SXM: 989 TFLOP/s dense bf16/fp16, 495 tf32, 1979 fp8, 67 fp32 FMA; 3.35 TB/s):
// a GEMM does 2 M N K FLOPs and must move at least the operands and D once. At 8192^3 in bf16 that is
// 1.10 TFLOP against 3 x 128 MiB = 403 MB: 2730 FLOP per byte, far beyond the ~295 FLOP/B ridge, so
// the bound is the tensor cores: 1.11 ms at peak; the 75 % MFU target is 1.48 ms. In fp8 the same
// problem is 0.56 ms at peak, 0.93 ms at the 60 % target. The quick ctest shapes (~10 MFLOP) are
// launch-latency bound and only check agreement.
//
// What is tuned: every operand K-major ("TN", the layout cuBLASLt's fp8 kernels need and the one
// Hopper's wgmma kernels prefer), the algorithm chosen once per problem by cuBLASLt's heuristic with
// the real pointer alignments and a 32 MiB workspace from the harness pool, fp8 with fast
// accumulation off by default (cuBLASLt then promotes the tensor cores' partial sums to fp32 at
// intervals, the fp32 accumulation the tolerance rule holds it to) and on where the case asks for it
// (the fastest fp8 path, held to a looser rule). Nothing is allocated or synchronized per call.
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <memory>
#include <string>
#include <type_traits>

#include "harness/error.h"
#include "harness/gpu.h"
#include "optimized/precision/gemm.h"

namespace gauge::optimized::precision {
namespace {

void check(cublasStatus_t status, const char* what) {
  if (status != CUBLAS_STATUS_SUCCESS) {
    throw RuntimeFailure(std::string("cuBLASLt ") + what + " failed: " + cublasLtGetStatusString(status));
  }
}

cudaDataType_t cuda_type(DType t) {
  switch (t) {
    case DType::f32:
    case DType::tf32: return CUDA_R_32F;  // tf32 is stored as fp32 bits
    case DType::f16: return CUDA_R_16F;
    case DType::bf16: return CUDA_R_16BF;
    case DType::e4m3: return CUDA_R_8F_E4M3;
    case DType::e5m2: return CUDA_R_8F_E5M2;
    default: break;
  }
  throw UsageError("no cuBLASLt data type for " + std::string(dtype_name(t)));
}

cublasComputeType_t compute_type(GemmMath math) {
  return math == GemmMath::tf32_tensor ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
}

// Largest power of two (up to cuBLASLt's 256-byte default) dividing the address.
uint32_t alignment_of(const void* p) {
  const auto address = reinterpret_cast<uintptr_t>(p);
  uint32_t alignment = 256;
  while (alignment > 1 && address % alignment != 0) alignment /= 2;
  return alignment;
}

struct DescDeleter {
  void operator()(std::remove_pointer_t<cublasLtMatmulDesc_t>* p) const { (void)cublasLtMatmulDescDestroy(p); }
};
struct LayoutDeleter {
  void operator()(std::remove_pointer_t<cublasLtMatrixLayout_t>* p) const { (void)cublasLtMatrixLayoutDestroy(p); }
};
struct PreferenceDeleter {
  void operator()(std::remove_pointer_t<cublasLtMatmulPreference_t>* p) const {
    (void)cublasLtMatmulPreferenceDestroy(p);
  }
};
using DescPtr = std::unique_ptr<std::remove_pointer_t<cublasLtMatmulDesc_t>, DescDeleter>;
using LayoutPtr = std::unique_ptr<std::remove_pointer_t<cublasLtMatrixLayout_t>, LayoutDeleter>;
using PreferencePtr = std::unique_ptr<std::remove_pointer_t<cublasLtMatmulPreference_t>, PreferenceDeleter>;

LayoutPtr make_layout(const LtMatrix& m) {
  cublasLtMatrixLayout_t layout = nullptr;
  check(cublasLtMatrixLayoutCreate(&layout, cuda_type(m.dtype), m.rows, m.cols, m.ld), "cublasLtMatrixLayoutCreate");
  return LayoutPtr(layout);
}

template <class T>
void set_desc(cublasLtMatmulDesc_t desc, cublasLtMatmulDescAttributes_t attribute, const T& value, const char* what) {
  check(cublasLtMatmulDescSetAttribute(desc, attribute, &value, sizeof value), what);
}

template <class T>
void set_preference(cublasLtMatmulPreference_t preference, cublasLtMatmulPreferenceAttributes_t attribute,
                    const T& value, const char* what) {
  check(cublasLtMatmulPreferenceSetAttribute(preference, attribute, &value, sizeof value), what);
}

}  // namespace

struct GemmPlan::Impl {
  GemmShape shape;
  GemmTypes types;
  GemmMath math = GemmMath::f32_fma;
  cublasLtHandle_t handle = nullptr;
  DescPtr desc;
  LayoutPtr a_layout, b_layout, d_layout;  // cuBLASLt's A (gauge's B), B (gauge's A), C = D
  cublasLtMatmulAlgo_t algo{};
  void* workspace = nullptr;
  size_t workspace_bytes = 0;
  uint32_t a_alignment = 0, b_alignment = 0, d_alignment = 0;  // of gauge's A, B, D, as planned

  void set_scales(const GemmOperands& operands) const {
    // The scales follow their buffers: cuBLASLt's A is gauge's B.
    set_desc(desc.get(), CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, static_cast<const void*>(operands.b_scale),
             "setting A_SCALE_POINTER");
    set_desc(desc.get(), CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, static_cast<const void*>(operands.a_scale),
             "setting B_SCALE_POINTER");
  }

  void check_operands(const GemmOperands& operands) const {
    if (operands.a == nullptr || operands.b == nullptr || operands.d == nullptr) {
      throw UsageError("GEMM " + describe_gemm(shape, types) + ": null operand pointer");
    }
    const bool fp8 = math == GemmMath::fp8_tensor;
    if (fp8 && (operands.a_scale == nullptr || operands.b_scale == nullptr)) {
      throw UsageError("fp8 GEMM " + describe_gemm(shape, types) + " needs device pointers to both dequantization scales");
    }
    if (!fp8 && (operands.a_scale != nullptr || operands.b_scale != nullptr)) {
      throw UsageError("GEMM " + describe_gemm(shape, types) + ": per-tensor scales apply to fp8 operands only");
    }
  }
};

GemmPlan::GemmPlan(gpu::Session& session, const GemmShape& shape, const GemmTypes& types, const GemmOperands& operands)
    : impl_(std::make_unique<Impl>()) {
  Impl& p = *impl_;
  p.shape = shape;
  p.types = types;
  p.math = validate_gemm(shape, types);
  p.check_operands(operands);
  const gpu::DeviceInfo& device = session.info();
  const std::string unsupported = gemm_device_unsupported_reason(p.math, device.cc_major, device.cc_minor);
  if (!unsupported.empty()) throw DeviceUnsupported(unsupported);
  p.handle = session.blas_lt();

  const LtGemm lt = lt_gemm(shape, types);
  cublasLtMatmulDesc_t desc = nullptr;
  check(cublasLtMatmulDescCreate(&desc, compute_type(p.math), CUDA_R_32F), "cublasLtMatmulDescCreate");
  p.desc.reset(desc);
  set_desc(desc, CUBLASLT_MATMUL_DESC_TRANSA, static_cast<int32_t>(lt.transpose_a ? CUBLAS_OP_T : CUBLAS_OP_N),
           "setting TRANSA");
  set_desc(desc, CUBLASLT_MATMUL_DESC_TRANSB, static_cast<int32_t>(lt.transpose_b ? CUBLAS_OP_T : CUBLAS_OP_N),
           "setting TRANSB");
  if (p.math == GemmMath::fp8_tensor) {
    // Off (the default, set to say so): partial sums are promoted to fp32 at intervals. On, Hopper's
    // fp8 tensor cores keep only ~14 significant bits over the whole K loop.
    set_desc(desc, CUBLASLT_MATMUL_DESC_FAST_ACCUM, static_cast<int8_t>(types.fp8_fast_accumulation ? 1 : 0),
             "setting FAST_ACCUM");
    p.set_scales(operands);
  }
  p.a_layout = make_layout(lt.a);
  p.b_layout = make_layout(lt.b);
  p.d_layout = make_layout(lt.d);

  p.a_alignment = alignment_of(operands.a);
  p.b_alignment = alignment_of(operands.b);
  p.d_alignment = alignment_of(operands.d);
  p.workspace_bytes = gpu::Session::kBlasWorkspaceBytes;
  cublasLtMatmulPreference_t preference_handle = nullptr;
  check(cublasLtMatmulPreferenceCreate(&preference_handle), "cublasLtMatmulPreferenceCreate");
  const PreferencePtr preference(preference_handle);
  set_preference(preference_handle, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, static_cast<uint64_t>(p.workspace_bytes),
                 "setting MAX_WORKSPACE_BYTES");
  set_preference(preference_handle, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, p.b_alignment, "setting MIN_ALIGNMENT_A");
  set_preference(preference_handle, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, p.a_alignment, "setting MIN_ALIGNMENT_B");
  set_preference(preference_handle, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, p.d_alignment, "setting MIN_ALIGNMENT_C");
  set_preference(preference_handle, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, p.d_alignment, "setting MIN_ALIGNMENT_D");
  // Split-K only with fp32 partials: the INPLACE and OUTPUT_TYPE reduction schemes add the K slices in
  // D's type (cublasLt.h), i.e. extra fp16/bf16 roundings beyond the one rounding of the fp32
  // accumulator that the faithful rule assumes. Unsplit algorithms (scheme NONE = 0) always pass.
  set_preference(preference_handle, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK,
                 static_cast<uint32_t>(CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE), "setting REDUCTION_SCHEME_MASK");

  cublasLtMatmulHeuristicResult_t result{};
  int returned = 0;
  check(cublasLtMatmulAlgoGetHeuristic(p.handle, desc, p.a_layout.get(), p.b_layout.get(), p.d_layout.get(),
                                       p.d_layout.get(), preference_handle, 1, &result, &returned),
        "cublasLtMatmulAlgoGetHeuristic");
  if (returned == 0 || result.state != CUBLAS_STATUS_SUCCESS) {
    throw RuntimeFailure("cuBLASLt has no algorithm for GEMM " + describe_gemm(shape, types));
  }
  p.algo = result.algo;
  // The full recommended workspace, not just this algorithm's minimum: the predicted device peak
  // counts it, and cuBLASLt may use more of it than the heuristic's figure.
  p.workspace = session.workspace(p.workspace_bytes);
}

GemmPlan::~GemmPlan() = default;

void GemmPlan::run(const GemmOperands& operands, StreamHandle stream) const {
  const Impl& p = *impl_;
  p.check_operands(operands);
  if (alignment_of(operands.a) < p.a_alignment || alignment_of(operands.b) < p.b_alignment ||
      alignment_of(operands.d) < p.d_alignment) {
    throw RuntimeFailure("GEMM " + describe_gemm(p.shape, p.types) +
                         ": operand pointers are less aligned than when the plan chose its algorithm");
  }
  if (p.math == GemmMath::fp8_tensor) p.set_scales(operands);
  // Host-side alpha / beta (cuBLASLt's default pointer mode): read when the call is enqueued.
  const float alpha = 1.0f;
  const float beta = 0.0f;
  check(cublasLtMatmul(p.handle, p.desc.get(), &alpha, operands.b, p.a_layout.get(), operands.a, p.b_layout.get(), &beta,
                       operands.d, p.d_layout.get(), operands.d, p.d_layout.get(), &p.algo, p.workspace,
                       p.workspace_bytes, static_cast<cudaStream_t>(stream)),
        "cublasLtMatmul");
}

const GemmShape& GemmPlan::shape() const { return impl_->shape; }
const GemmTypes& GemmPlan::types() const { return impl_->types; }
GemmMath GemmPlan::math() const { return impl_->math; }
size_t GemmPlan::workspace_bytes() const { return impl_->workspace_bytes; }

namespace {

const DeviceTensor& scale_tensor(const OptimizedArgs& args, size_t i) {
  const DeviceTensor& t = args.inputs.at(i);
  if (t.dtype != DType::f32 || t.numel() != 1) {
    throw UsageError("fp8 GEMM scale '" + t.name + "' must be one f32 value, got " + std::string(dtype_name(t.dtype)) +
                     " " + shape_string(t.shape));
  }
  return t;
}

GemmOperands operands_of(const OptimizedArgs& args, bool fp8) {
  GemmOperands operands{args.inputs.at(0).ptr, args.inputs.at(1).ptr, args.outputs.at(0).ptr};
  if (fp8) {
    operands.a_scale = static_cast<const float*>(scale_tensor(args, 2).ptr);
    operands.b_scale = static_cast<const float*>(scale_tensor(args, 3).ptr);
  }
  return operands;
}

}  // namespace

std::shared_ptr<void> prepare_gemm(const OptimizedArgs& args, bool fp8_fast_accumulation) {
  if (args.inputs.size() < 2 || args.outputs.empty()) {
    throw UsageError("a GEMM case needs inputs a, b (and for fp8 a_scale, b_scale) and output d");
  }
  const DeviceTensor& a = args.inputs[0];
  const DeviceTensor& b = args.inputs[1];
  const DeviceTensor& d = args.outputs[0];
  const GemmTypes types{a.dtype, b.dtype, d.dtype, fp8_fast_accumulation};
  const GemmShape shape = gemm_shape_of(a.shape, b.shape, d.shape);
  const bool fp8 = validate_gemm(shape, types) == GemmMath::fp8_tensor;
  if (args.inputs.size() != (fp8 ? 4u : 2u)) {
    throw UsageError("GEMM " + describe_gemm(shape, types) + " takes " + (fp8 ? "4 inputs (a, b, a_scale, b_scale)" : "2 inputs (a, b)") +
                     ", got " + std::to_string(args.inputs.size()));
  }
  return std::make_shared<GemmPlan>(args.session, shape, types, operands_of(args, fp8));
}

void run_gemm(const OptimizedArgs& args) {
  const GemmPlan& plan = args.state<GemmPlan>();
  plan.run(operands_of(args, plan.math() == GemmMath::fp8_tensor), args.stream);
}

}  // namespace gauge::optimized::precision
