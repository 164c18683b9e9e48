// GEMM in every precision, declared once per dtype configuration:
//   f32 x f32 -> f32 (FMA), tf32 x tf32 -> f32, f16 x f16 -> f16, bf16 x bf16 -> bf16,
//   e4m3 x e4m3 -> bf16, e4m3 x e5m2 -> bf16, e4m3 x e4m3 -> f32 (fp8 with per-tensor scales).
// Layout (optimized/precision/gemm_problem.h): a [M,K], b [N,K], d [M,N] row-major, d = a bᵀ, scaled
// by a_scale * b_scale for fp8.
//
// Inputs: uniform(-1, 1) fp32 from the counter-based RNG, rounded to the operand format by the
// reference casts (tf32: round to nearest even; fp8: per-tensor power-of-two scale from the tensor's
// amax, so the dequantization is exact). Both sides take the same tensors.
//
// Agreement: the "2 x faithful low-precision reference" rule against the fp64 truth (dgemm on the
// decoded operands); the faithful reference sums the same operands in fp32 (sgemm) and rounds once to
// the output format. atol covers what tensor cores do differently from fp32 round-to-nearest
// accumulation; it is derived below, per configuration, from the depth K.
//
// Benchmarks: 4096^3, 8192^3 and 16384x4096x4096 (an LLM projection: tokens x hidden x hidden). The
// CPU reference runs dgemm and sgemm on each: at 8192^3 that is 2 x 1.1 TFLOP, tens of seconds per
// call on a small CPU, repeated by the reference's own timing unless `gauge run --device cuda`.
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "harness/case.h"
#include "harness/gpu.h"
#include "harness/inputs.h"
#include "optimized/precision/gemm_problem.h"
#include "reference/precision/gemm.h"
#if GAUGE_HAS_CUDA
#include "optimized/precision/gemm.h"
#endif

namespace gauge::suites::precision {
namespace {

namespace ref = gauge::reference::precision;
using optimized::precision::GemmMath;
using optimized::precision::GemmShape;
using optimized::precision::GemmTypes;

struct GemmConfig {
  const char* name;
  const char* description;
  GemmTypes types;
};

// Quick points: ragged shapes (no dimension a multiple of 8, let alone 64) the CPU reference does in
// milliseconds; fp8 needs multiples of 16, so its quick shape is ragged only with respect to 64.
const std::vector<ShapeSpec> kShapes = {
    {{{"m", 123}, {"n", 77}, {"k", 301}}, true},
    {{{"m", 4096}, {"n", 4096}, {"k", 4096}}, false},
    {{{"m", 8192}, {"n", 8192}, {"k", 8192}}, false},
    {{{"m", 16384}, {"n", 4096}, {"k", 4096}}, false},
};
const std::vector<ShapeSpec> kFp8Shapes = {
    {{{"m", 144}, {"n", 80}, {"k", 272}}, true},
    {{{"m", 4096}, {"n", 4096}, {"k", 4096}}, false},
    {{{"m", 8192}, {"n", 8192}, {"k", 8192}}, false},
    {{{"m", 16384}, {"n", 4096}, {"k", 4096}}, false},
};

GemmShape shape_of(const Point& p) { return {p.dim("m"), p.dim("n"), p.dim("k")}; }

// E[sum_k |a_k b_k|] for independent uniform(-1, 1) operands (dequantized): K E|a| E|b| = K / 4. The
// fp8 and narrow roundings keep E|x| at 1/2 to within the format's unit round-off.
double expected_abs_sum(int64_t k) { return static_cast<double>(k) / 4.0; }

// The faithful reference accumulates in fp32 with round to nearest (sgemm). What the device does
// differently, as an absolute bound over the depth K:
// - fp32 (FMA): the same arithmetic in another order. No atol.
// - tf32 / fp16 / bf16 tensor cores: the products are exact in fp32, but each MMA step adds its k
//   products to the fp32 accumulator with truncation toward zero (Fasi, Higham, Mikaitis and Pranesh,
//   "Numerical behavior of NVIDIA tensor cores", PeerJ Comput. Sci. 2021), an error under one fp32 ulp
//   (2u) of the running sum per step: gamma_{ceil(K/k)}(2u) * E sum|a b|, with k = 8 (tf32) or 16
//   (fp16 / bf16), the K of one mma instruction.
// - fp8 tensor cores keep about 14 significant bits while accumulating (DeepSeek-V3 technical report,
//   3.3.2, on H800), and cuBLASLt without fast accumulation promotes the partial sum to fp32 every 128
//   products (4 MMA steps of k = 32). Per interval: 4 truncations of under 2^-13 of the interval's
//   sum; per promotion one fp32 rounding: (gamma_4(2^-13) + gamma_{ceil(K/128)}(u)) * E sum|a b|.
// - fp8 with fast accumulation: no promotion, the ~14-bit accumulator carries the whole K loop, one
//   truncation of under 2^-13 per MMA step of 32 products: gamma_{ceil(K/32)}(2^-13) * E sum|a b|.
//   At K = 8192 that is ~3 % of E sum|a b|: the price of the fastest fp8 path, stated, not hidden.
ToleranceRule gemm_tolerance(GemmMath math, int64_t k, bool fp8_fast_accumulation) {
  const double u32 = unit_roundoff(DType::f32);
  const double magnitude = expected_abs_sum(k);
  switch (math) {
    case GemmMath::f32_fma:
      return tolerance::faithful(2.0, 0.0, "fp32 FMA accumulation like the faithful sgemm, in another order: no atol");
    case GemmMath::tf32_tensor:
    case GemmMath::f16_tensor:
    case GemmMath::bf16_tensor: {
      const int64_t mma_k = math == GemmMath::tf32_tensor ? 8 : 16;
      const int64_t steps = (k + mma_k - 1) / mma_k;
      const double atol = tolerance::gamma(steps, 2.0 * u32) * magnitude;
      return tolerance::faithful(
          2.0, atol,
          "2 x the fp32-accumulated faithful reference, atol = gamma_" + std::to_string(steps) +
              "(2^-23) * K/4: tensor-core MMA steps of " + std::to_string(mma_k) +
              " products truncate the fp32 running sum (< 1 ulp per step), K/4 = E sum|a b| for uniform(-1,1)");
    }
    case GemmMath::fp8_tensor: {
      if (fp8_fast_accumulation) {
        const int64_t steps = (k + 31) / 32;
        const double atol = tolerance::gamma(steps, std::ldexp(1.0, -13)) * magnitude;
        return tolerance::faithful(
            2.0, atol,
            "2 x the fp32-accumulated faithful reference, atol = gamma_" + std::to_string(steps) +
                "(2^-13) * K/4: with fast accumulation the fp8 tensor cores' ~14-bit accumulator holds the whole K "
                "loop, one truncation per MMA step of 32 products; K/4 = E sum|a b| for uniform(-1,1)");
      }
      const int64_t promotions = (k + 127) / 128;
      const double atol =
          (tolerance::gamma(4, std::ldexp(1.0, -13)) + tolerance::gamma(promotions, u32)) * magnitude;
      return tolerance::faithful(
          2.0, atol,
          "2 x the fp32-accumulated faithful reference, atol = (gamma_4(2^-13) + gamma_" + std::to_string(promotions) +
              "(2^-24)) * K/4: fp8 tensor cores keep ~14 bits within each 128-product interval (4 MMA steps), "
              "then cuBLASLt adds the interval into fp32; K/4 = E sum|a b| for uniform(-1,1)");
    }
  }
  return tolerance::faithful(2.0, 0.0, "");
}

std::vector<HostTensor> gemm_inputs(const GemmConfig& config, const Point& p, uint64_t seed) {
  const GemmShape shape = shape_of(p);
  // A point the optimized side cannot run is a declaration error: say so before any work.
  const bool fp8 = optimized::precision::validate_gemm(shape, config.types) == GemmMath::fp8_tensor;
  const HostTensor a = inputs::uniform_f32("a", {shape.m, shape.k}, seed, /*tensor_id=*/0, -1.0f, 1.0f);
  const HostTensor b = inputs::uniform_f32("b", {shape.n, shape.k}, seed, /*tensor_id=*/1, -1.0f, 1.0f);
  std::vector<HostTensor> out;
  if (!fp8) {
    out.push_back(ref::round_f32_tensor(a, config.types.a, "a"));
    out.push_back(ref::round_f32_tensor(b, config.types.b, "b"));
    return out;
  }
  ref::Fp8Quantized qa = ref::quantize_fp8_pow2(a, config.types.a, "a");
  ref::Fp8Quantized qb = ref::quantize_fp8_pow2(b, config.types.b, "b");
  HostTensor a_scale("a_scale", DType::f32, {1});
  HostTensor b_scale("b_scale", DType::f32, {1});
  a_scale.view<float>()[0] = qa.dequant_scale;
  b_scale.view<float>()[0] = qb.dequant_scale;
  out.push_back(std::move(qa.values));
  out.push_back(std::move(qb.values));
  out.push_back(std::move(a_scale));
  out.push_back(std::move(b_scale));
  return out;
}

CostModel gemm_model(const GemmConfig& config, const Point& p) {
  const GemmShape s = shape_of(p);
  const bool fp8 = optimized::precision::is_fp8(config.types.a);
  const auto size = [](DType t) { return static_cast<int64_t>(dtype_size(t)); };
  const int64_t a_bytes = s.m * s.k * size(config.types.a);
  const int64_t b_bytes = s.n * s.k * size(config.types.b);
  const int64_t d_bytes = s.m * s.n * size(config.types.out);
  const int64_t scale_bytes = fp8 ? 8 : 0;
  CostModel m;
  m.flops = 2.0 * static_cast<double>(s.m) * static_cast<double>(s.n) * static_cast<double>(s.k);
  m.bytes = static_cast<double>(a_bytes + b_bytes + d_bytes + scale_bytes);
  m.bound = Bound::compute;
  // tf32 and fp8 (either fp8 format) are measured against their own tensor-core peaks.
  m.math_dtype = config.types.a;
  // Reference: the inputs, the fp64 truth, then either the operands decoded to fp64 (dgemm) or, after
  // they are freed, the operands in fp32 plus the faithful output (and its fp32 sums when the output
  // is narrower).
  const int64_t operands = s.m * s.k + s.n * s.k;
  const int64_t outputs = s.m * s.n;
  const int64_t truth_phase = 8 * operands;
  const int64_t faithful_phase =
      4 * operands + outputs * size(config.types.out) + (config.types.out == DType::f32 ? 0 : 4 * outputs);
  m.predicted_host_peak_bytes = a_bytes + b_bytes + scale_bytes + 8 * outputs + std::max(truth_phase, faithful_phase);
  // Device: operands, scales, D and the cuBLASLt workspace the plan takes from the pool.
  m.predicted_device_peak_bytes =
      a_bytes + b_bytes + scale_bytes + d_bytes + static_cast<int64_t>(gpu::Session::kBlasWorkspaceBytes);
  return m;
}

ReferenceResult gemm_reference(const GemmConfig& config, const std::vector<HostTensor>& in) {
  const bool fp8 = in.size() == 4;
  const float a_scale = fp8 ? in[2].view<float>()[0] : 1.0f;
  const float b_scale = fp8 ? in[3].view<float>()[0] : 1.0f;
  ReferenceResult r;
  r.outputs.push_back(ref::gemm_truth(in[0], in[1], a_scale, b_scale, "d"));
  r.faithful.push_back(ref::gemm_faithful(in[0], in[1], config.types.out, a_scale, b_scale, "d"));
  return r;
}

bool declare(const GemmConfig& config) {
  const bool fp8 = optimized::precision::is_fp8(config.types.a);
  return register_case({
      .suite = "precision",
      .name = config.name,
      .description = config.description,
      .points = grid(fp8 ? kFp8Shapes : kShapes, {config.types.a}),
      .model = [config](const Point& p) { return gemm_model(config, p); },
      .tolerance =
          [config](const Point& p) {
            return gemm_tolerance(optimized::precision::validate_gemm(shape_of(p), config.types), p.dim("k"),
                                  config.types.fp8_fast_accumulation);
          },
      .inputs = [config](const Point& p, uint64_t seed) { return gemm_inputs(config, p, seed); },
      .reference = [config](const Point&, const std::vector<HostTensor>& in) { return gemm_reference(config, in); },
      .optimized = GAUGE_CUDA_ONLY(OptimizedFn(optimized::precision::run_gemm)),
      .params =
          [config](const Point&) {
            return Params{{"layout", std::string("a [m,k], b [n,k], d [m,n] row-major; d = a_scale * b_scale * a @ b.T")},
                          {"a_dtype", std::string(dtype_name(config.types.a))},
                          {"b_dtype", std::string(dtype_name(config.types.b))},
                          {"out_dtype", std::string(dtype_name(config.types.out))},
                          {"accumulation", std::string(config.types.fp8_fast_accumulation
                                                           ? "fp8 tensor-core accumulator (cuBLASLt FAST_ACCUM)"
                                                           : "fp32")}};
          },
      .prepare = GAUGE_CUDA_ONLY(PrepareFn([config](const OptimizedArgs& a) {
        return optimized::precision::prepare_gemm(a, config.types.fp8_fast_accumulation);
      })),
  });
}

const GemmConfig kConfigs[] = {
    {"gemm_f32", "fp32 x fp32 -> fp32, fp32 FMA accumulation (cuBLASLt CUBLAS_COMPUTE_32F)",
     {DType::f32, DType::f32, DType::f32}},
    {"gemm_tf32", "tf32 x tf32 -> fp32 on tensor cores, fp32 accumulation (CUBLAS_COMPUTE_32F_FAST_TF32)",
     {DType::tf32, DType::tf32, DType::f32}},
    {"gemm_f16", "fp16 x fp16 -> fp16, fp32 accumulation", {DType::f16, DType::f16, DType::f16}},
    {"gemm_bf16", "bf16 x bf16 -> bf16, fp32 accumulation", {DType::bf16, DType::bf16, DType::bf16}},
    {"gemm_e4m3_e4m3_bf16", "fp8 e4m3 x e4m3 -> bf16, per-tensor scales, fp32 accumulation",
     {DType::e4m3, DType::e4m3, DType::bf16}},
    {"gemm_e4m3_e5m2_bf16", "fp8 e4m3 x e5m2 -> bf16, per-tensor scales, fp32 accumulation",
     {DType::e4m3, DType::e5m2, DType::bf16}},
    {"gemm_e4m3_e4m3_f32", "fp8 e4m3 x e4m3 -> fp32, per-tensor scales, fp32 accumulation",
     {DType::e4m3, DType::e4m3, DType::f32}},
    {"gemm_e4m3_e4m3_bf16_fast_accum",
     "fp8 e4m3 x e4m3 -> bf16, per-tensor scales, fast accumulation (no fp32 promotion inside the K loop)",
     {DType::e4m3, DType::e4m3, DType::bf16, /*fp8_fast_accumulation=*/true}},
};

[[maybe_unused]] const bool gemm_registered = [] {
  for (const GemmConfig& config : kConfigs) declare(config);
  return true;
}();

}  // namespace
}  // namespace gauge::suites::precision
