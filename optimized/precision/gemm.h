// cuBLASLt GEMM in every precision, with the layout and dtype combinations of
// optimized/precision/gemm_problem.h (row-major A [M,K], B [N,K], D [M,N]; D = scale_a scale_b A Bᵀ).
//
// A GemmPlan is built once per problem (untimed: CaseDecl::prepare): it validates the problem,
// checks that the device can run it, creates the cuBLASLt descriptors, asks the heuristic for the
// best algorithm, and takes cuBLASLt's workspace from the harness pool. run() then only enqueues
// cublasLtMatmul on the stream. Plain C++ header: no CUDA types.
#pragma once

#include <cstdint>
#include <memory>

#include "harness/case.h"
#include "harness/stream.h"
#include "optimized/precision/gemm_problem.h"

namespace gauge::gpu {
class Session;
}

namespace gauge::optimized::precision {

// Device operands of one GEMM. a_scale / b_scale: device fp32 scalars holding the dequantization
// scales of fp8 operands (required for fp8, must be null otherwise). The plan records the pointers'
// alignment and the scale pointers: later calls must pass buffers at least as aligned.
struct GemmOperands {
  const void* a = nullptr;
  const void* b = nullptr;
  void* d = nullptr;
  const float* a_scale = nullptr;
  const float* b_scale = nullptr;
};

class GemmPlan {
 public:
  // UsageError for a bad problem (see validate_gemm); RuntimeFailure when the device cannot run it
  // (e.g. fp8 below compute capability 8.9) or cuBLASLt refuses it.
  GemmPlan(gpu::Session& session, const GemmShape& shape, const GemmTypes& types, const GemmOperands& operands);
  ~GemmPlan();
  GemmPlan(const GemmPlan&) = delete;
  GemmPlan& operator=(const GemmPlan&) = delete;

  // Enqueues D = scale_a scale_b A Bᵀ on `stream`; does not synchronize.
  void run(const GemmOperands& operands, StreamHandle stream) const;

  const GemmShape& shape() const;
  const GemmTypes& types() const;
  GemmMath math() const;
  size_t workspace_bytes() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// For case declarations. Inputs: a [M,K], b [N,K] (and for fp8 a_scale, b_scale: f32 [1]); output 0 is
// D [M,N] in the output dtype. Shapes and dtypes are checked (UsageError). fp8_fast_accumulation as
// in GemmTypes (the tensors' dtypes give the rest).
std::shared_ptr<void> prepare_gemm(const OptimizedArgs& args, bool fp8_fast_accumulation = false);
void run_gemm(const OptimizedArgs& args);  // args.prepared from prepare_gemm

}  // namespace gauge::optimized::precision
