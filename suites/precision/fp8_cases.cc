// fp8 / tf32 casts, stochastic rounding to fp16 / fp8, and the fused amax + scaled fp8 cast, declared
// once. Every rule is bit-exactness: each output is one correctly rounded operation (or a maximum, or
// a stochastic rounding fixed by its Philox word), so it has one answer.
//
// Inputs: the casts take raw Philox bit patterns (every run covers normals, subnormals, zeros, Inf and
// NaN payloads of both signs; for fp8 most fp32 patterns overflow or underflow, which is exactly where
// the two overflow modes differ). Stochastic rounding takes three quarters normal values inside the
// format's range and one quarter raw patterns. The scaling cases take normal values (sigma 3), the
// distribution of activations the scaling exists for.
//
// Points: a ragged quick size (2^20 + 3, so the scalar tail runs) for ctest, and 2^26 elements
// (256 MiB of fp32) for bandwidth.
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "harness/case.h"
#include "harness/error.h"
#include "harness/inputs.h"
#include "reference/precision/fp8.h"
#include "reference/precision/scaling.h"
#include "reference/precision/stochastic_rounding.h"
#if GAUGE_HAS_CUDA
#include "harness/gpu.h"
#include "optimized/precision/fp8_casts.h"
#include "optimized/precision/scaled_cast.h"
#include "optimized/precision/stochastic_round.h"
#endif

namespace gauge::suites::precision {
namespace {

namespace ref = gauge::reference::precision;
using gauge::precision::AmaxAlgorithm;
using gauge::precision::Fp8Format;
using gauge::precision::Fp8Overflow;

constexpr int64_t kQuickN = (int64_t{1} << 20) + 3;
constexpr int64_t kBandwidthN = int64_t{1} << 26;

// The stochastic-rounding key of the cases (exported with the vectors as params).
constexpr uint64_t kSrSeed = 0x5352534545440000ull;  // "SRSEED"
constexpr uint32_t kSrTensorId = 0;
constexpr uint64_t kSrStep = 0;

Fp8Format fp8_format_of(DType dtype) {
  if (dtype == DType::e4m3) return Fp8Format::e4m3;
  if (dtype == DType::e5m2) return Fp8Format::e5m2;
  throw UsageError("fp8 case: dtype " + std::string(dtype_name(dtype)) + " is not an fp8 format");
}

Fp8Overflow overflow_of(const Point& p) {
  return p.dim("saturate") != 0 ? Fp8Overflow::saturate : Fp8Overflow::non_saturating;
}

HostTensor f32_patterns(int64_t n, uint64_t seed) {
  HostTensor words = inputs::philox_u32("x", {n}, seed, /*tensor_id=*/0);
  HostTensor x("x", DType::f32, {n});
  std::memcpy(x.data(), words.data(), words.size_bytes());
  return x;
}

HostTensor fp8_patterns(DType dtype, int64_t n, uint64_t seed) {
  const HostTensor words = inputs::philox_u32("x", {n}, seed, /*tensor_id=*/0);
  HostTensor x("x", dtype, {n});
  auto out = x.view<uint8_t>();
  auto in = words.view<uint32_t>();
  for (size_t i = 0; i < out.size(); ++i) out[i] = static_cast<uint8_t>(in[i] >> 24);
  return x;
}

// Normal values with standard deviation `stddev`, every fourth element replaced by a raw pattern.
HostTensor mixed_values(int64_t n, uint64_t seed, float stddev) {
  HostTensor x = inputs::normal_f32("x", {n}, seed, /*tensor_id=*/0, 0.0f, stddev);
  const HostTensor words = inputs::philox_u32("w", {n}, seed, /*tensor_id=*/1);
  auto values = x.view<float>();
  auto raw = words.view<uint32_t>();
  for (size_t i = 0; i < values.size(); i += 4) std::memcpy(&values[i], &raw[i], sizeof(float));
  return x;
}

CostModel streaming_model(int64_t n, double in_bytes, double out_bytes, int64_t extra_device_bytes = 0) {
  CostModel m;
  m.bytes = static_cast<double>(n) * (in_bytes + out_bytes);
  m.bound = Bound::memory;
  m.predicted_host_peak_bytes = static_cast<int64_t>(m.bytes);
  m.predicted_device_peak_bytes = static_cast<int64_t>(m.bytes) + extra_device_bytes;
  return m;
}

ToleranceRule exact(const Point&) { return tolerance::exact_bits(); }

ReferenceResult single_output(HostTensor y) {
  ReferenceResult r;
  r.outputs.push_back(std::move(y));
  return r;
}

std::vector<ShapeSpec> saturation_shapes() {
  return {{{{"n", kQuickN}, {"saturate", 1}}, true},
          {{{"n", kQuickN}, {"saturate", 0}}, true},
          {{{"n", kBandwidthN}, {"saturate", 1}}, false},
          {{{"n", kBandwidthN}, {"saturate", 0}}, false}};
}

std::vector<ShapeSpec> plain_shapes() { return {{{{"n", kQuickN}}, true}, {{{"n", kBandwidthN}}, false}}; }

Params overflow_params(const Point& p) {
  return {{"overflow", std::string(gauge::precision::fp8_overflow_name(overflow_of(p)))},
          {"rounding", std::string("nearest_even")}};
}

// ---- Casts --------------------------------------------------------------------------------------------

[[maybe_unused]] const bool f32_to_fp8_registered = register_case({
    .suite = "precision",
    .name = "cast_f32_to_fp8",
    .description = "fp32 -> fp8 E4M3 / E5M2, round to nearest even, subnormals kept, saturating or "
                   "non-saturating overflow, NaN rules of reference/precision/fp8.h",
    .points = grid(saturation_shapes(), {DType::e4m3, DType::e5m2}),
    .model = [](const Point& p) { return streaming_model(p.dim("n"), 4, 1); },
    .tolerance = exact,
    .inputs = [](const Point& p, uint64_t seed) { return std::vector<HostTensor>{f32_patterns(p.dim("n"), seed)}; },
    .reference =
        [](const Point& p, const std::vector<HostTensor>& in) {
          HostTensor y("y", p.dtype, in[0].shape());
          ref::cast_f32_to_fp8(in[0].view<float>(), y.view<uint8_t>(), fp8_format_of(p.dtype), overflow_of(p));
          return single_output(std::move(y));
        },
    .optimized = GAUGE_CUDA_ONLY([](const OptimizedArgs& a) {
      optimized::precision::cast_f32_to_fp8(a.in<float>(0), a.out<uint8_t>(0), a.point.dim("n"),
                                            fp8_format_of(a.point.dtype), overflow_of(a.point), a.stream);
    }),
    .params = overflow_params,
});

[[maybe_unused]] const bool fp8_to_f32_registered = register_case({
    .suite = "precision",
    .name = "cast_fp8_to_f32",
    .description = "fp8 E4M3 / E5M2 -> fp32, exact; NaN keeps sign and payload with the quiet bit set",
    .points = grid(plain_shapes(), {DType::e4m3, DType::e5m2}),
    .model = [](const Point& p) { return streaming_model(p.dim("n"), 1, 4); },
    .tolerance = exact,
    .inputs =
        [](const Point& p, uint64_t seed) {
          return std::vector<HostTensor>{fp8_patterns(p.dtype, p.dim("n"), seed)};
        },
    .reference =
        [](const Point& p, const std::vector<HostTensor>& in) {
          HostTensor y("y", DType::f32, in[0].shape());
          ref::cast_fp8_to_f32(in[0].view<uint8_t>(), y.view<float>(), fp8_format_of(p.dtype));
          return single_output(std::move(y));
        },
    .optimized = GAUGE_CUDA_ONLY([](const OptimizedArgs& a) {
      optimized::precision::cast_fp8_to_f32(a.in<uint8_t>(0), a.out<float>(0), a.point.dim("n"),
                                            fp8_format_of(a.point.dtype), a.stream);
    }),
});

[[maybe_unused]] const bool f32_to_tf32_registered = register_case({
    .suite = "precision",
    .name = "cast_f32_to_tf32",
    .description = "fp32 -> tf32 (stored as fp32), round to nearest, ties to even (not the ties-away of "
                   "cvt.rna.tf32.f32), subnormals kept, overflow to Inf, quiet NaN",
    .points = grid(plain_shapes(), {DType::tf32}),
    .model = [](const Point& p) { return streaming_model(p.dim("n"), 4, 4); },
    .tolerance = exact,
    .inputs = [](const Point& p, uint64_t seed) { return std::vector<HostTensor>{f32_patterns(p.dim("n"), seed)}; },
    .reference =
        [](const Point&, const std::vector<HostTensor>& in) {
          HostTensor y("y", DType::tf32, in[0].shape());
          ref::cast_f32_to_tf32(in[0].view<float>(), y.view<float>());
          return single_output(std::move(y));
        },
    .optimized = GAUGE_CUDA_ONLY([](const OptimizedArgs& a) {
      optimized::precision::cast_f32_to_tf32(a.in<float>(0), a.out<float>(0), a.point.dim("n"), a.stream);
    }),
    .params = [](const Point&) { return Params{{"rounding", std::string("nearest_even")}}; },
});

// ---- Stochastic rounding ----------------------------------------------------------------------------------

Params sr_params(const Point& p) {
  Params params = {{"seed", static_cast<int64_t>(kSrSeed)},
                   {"tensor_id", static_cast<int64_t>(kSrTensorId)},
                   {"step", static_cast<int64_t>(kSrStep)},
                   {"philox_stream", std::string("stochastic_rounding")},
                   {"rounding", std::string("stochastic")}};
  if (p.dtype != DType::f16) {
    params.emplace_back("overflow", std::string(gauge::precision::fp8_overflow_name(overflow_of(p))));
  }
  return params;
}

float sr_stddev(DType dtype) { return dtype == DType::e5m2 ? 3000.0f : dtype == DType::e4m3 ? 100.0f : 1000.0f; }

[[maybe_unused]] const bool sr_f16_registered = register_case({
    .suite = "precision",
    .name = "stochastic_round_f32_to_f16",
    .description = "fp32 -> fp16 stochastic rounding, one Philox word per element "
                   "(reference/precision/stochastic_rounding.h)",
    .points = grid(plain_shapes(), {DType::f16}),
    .model = [](const Point& p) { return streaming_model(p.dim("n"), 4, 2); },
    .tolerance = exact,
    .inputs =
        [](const Point& p, uint64_t seed) {
          return std::vector<HostTensor>{mixed_values(p.dim("n"), seed, sr_stddev(p.dtype))};
        },
    .reference =
        [](const Point&, const std::vector<HostTensor>& in) {
          HostTensor y("y", DType::f16, in[0].shape());
          ref::stochastic_round_f32_to_f16(in[0].view<float>(), y.view<uint16_t>(), kSrSeed, kSrTensorId, kSrStep);
          return single_output(std::move(y));
        },
    .optimized = GAUGE_CUDA_ONLY([](const OptimizedArgs& a) {
      optimized::precision::stochastic_round_f32_to_f16(a.in<float>(0), a.out<uint16_t>(0), a.point.dim("n"), kSrSeed,
                                                        kSrTensorId, kSrStep, a.stream);
    }),
    .params = sr_params,
});

[[maybe_unused]] const bool sr_fp8_registered = register_case({
    .suite = "precision",
    .name = "stochastic_round_f32_to_fp8",
    .description = "fp32 -> fp8 E4M3 / E5M2 stochastic rounding, one Philox word per element, saturating or "
                   "non-saturating overflow",
    .points = grid(saturation_shapes(), {DType::e4m3, DType::e5m2}),
    .model = [](const Point& p) { return streaming_model(p.dim("n"), 4, 1); },
    .tolerance = exact,
    .inputs =
        [](const Point& p, uint64_t seed) {
          return std::vector<HostTensor>{mixed_values(p.dim("n"), seed, sr_stddev(p.dtype))};
        },
    .reference =
        [](const Point& p, const std::vector<HostTensor>& in) {
          HostTensor y("y", p.dtype, in[0].shape());
          ref::stochastic_round_f32_to_fp8(in[0].view<float>(), y.view<uint8_t>(), fp8_format_of(p.dtype),
                                           overflow_of(p), kSrSeed, kSrTensorId, kSrStep);
          return single_output(std::move(y));
        },
    .optimized = GAUGE_CUDA_ONLY([](const OptimizedArgs& a) {
      optimized::precision::stochastic_round_f32_to_fp8(a.in<float>(0), a.out<uint8_t>(0), a.point.dim("n"),
                                                        fp8_format_of(a.point.dtype), overflow_of(a.point), kSrSeed,
                                                        kSrTensorId, kSrStep, a.stream);
    }),
    .params = sr_params,
});

// ---- amax + scaled cast ----------------------------------------------------------------------------------

constexpr int kMargin = 0;
constexpr float kActivationStddev = 3.0f;

HostTensor scalar(const char* name, float value) {
  HostTensor t(name, DType::f32, {1});
  t.view<float>()[0] = value;
  return t;
}

#if GAUGE_HAS_CUDA
// Untimed: the kernels' workspace (per-block partials, the arrival counter) from the pool, zeroed once.
struct ScalingWorkspace {
  void* pointer = nullptr;
};

std::shared_ptr<void> prepare_scaling(const OptimizedArgs& a) {
  auto prepared = std::make_shared<ScalingWorkspace>();
  prepared->pointer = a.session.workspace(optimized::precision::scaling_workspace_bytes());
  optimized::precision::clear_scaling_workspace(prepared->pointer, a.stream);
  return prepared;
}
#endif

// The workspace: 2048 partials and a counter, ~8 KiB (optimized/precision/scaled_cast.cu).
constexpr int64_t kScalingWorkspaceBytes = 2048 * 4 + 16;

[[maybe_unused]] const bool current_registered = register_case({
    .suite = "precision",
    .name = "amax_scaled_cast_current",
    .description = "current scaling: amax of x, scale = (fp8_max / amax) / 2^margin, y = fp8(x * scale) "
                   "saturating; outputs y, amax, scale, scale_inv. Two launches, amax kept on the device: x is "
                   "read twice, so expect <= 5/9 of the HBM peak against the 5-byte model beyond L2",
    .points = grid({{{{"n", kQuickN}}, true}, {{{"n", kBandwidthN}}, false}}, {DType::e4m3, DType::e5m2}),
    .model = [](const Point& p) { return streaming_model(p.dim("n"), 4, 1, kScalingWorkspaceBytes + 12); },
    .tolerance = exact,
    .inputs =
        [](const Point& p, uint64_t seed) {
          return std::vector<HostTensor>{
              inputs::normal_f32("x", {p.dim("n")}, seed, /*tensor_id=*/0, 0.0f, kActivationStddev)};
        },
    .reference =
        [](const Point& p, const std::vector<HostTensor>& in) {
          HostTensor y("y", p.dtype, in[0].shape());
          const ref::CurrentScaling s = ref::current_scaling_cast(in[0].view<float>(), fp8_format_of(p.dtype),
                                                                  Fp8Overflow::saturate, kMargin, y.view<uint8_t>());
          ReferenceResult r;
          r.outputs.push_back(std::move(y));
          r.outputs.push_back(scalar("amax", s.amax));
          r.outputs.push_back(scalar("scale", s.scale));
          r.outputs.push_back(scalar("scale_inv", s.scale_inv));
          return r;
        },
    .optimized = GAUGE_CUDA_ONLY([](const OptimizedArgs& a) {
      const optimized::precision::Fp8Scaling scaling{fp8_format_of(a.point.dtype), Fp8Overflow::saturate, kMargin};
      optimized::precision::current_scaled_cast(a.in<float>(0), a.out<uint8_t>(0), a.point.dim("n"), scaling,
                                                a.out<float>(1), a.out<float>(2), a.out<float>(3),
                                                a.state<ScalingWorkspace>().pointer, a.stream);
    }),
    .params = [](const Point&) { return Params{{"margin", int64_t{kMargin}}, {"overflow", std::string("saturate")}}; },
    .prepare = GAUGE_CUDA_ONLY(PrepareFn(prepare_scaling)),
});

AmaxAlgorithm algorithm_of(const Point& p) {
  return p.dim("most_recent") != 0 ? AmaxAlgorithm::most_recent : AmaxAlgorithm::max;
}

[[maybe_unused]] const bool delayed_registered = register_case({
    .suite = "precision",
    .name = "amax_scaled_cast_delayed",
    .description = "delayed scaling: scale from an amax history (window, max or most recent), y = fp8(x * scale) "
                   "saturating, this tensor's amax reduced in the same pass; outputs y, scale, scale_inv, amax, the "
                   "updated history and the next scale. One fused launch: x read once",
    .points = grid({{{{"n", kQuickN}, {"window", 16}, {"most_recent", 0}}, true},
                    {{{"n", kQuickN}, {"window", 1024}, {"most_recent", 1}}, true},
                    {{{"n", kBandwidthN}, {"window", 1024}, {"most_recent", 0}}, false}},
                   {DType::e4m3, DType::e5m2}),
    .model =
        [](const Point& p) {
          CostModel m = streaming_model(p.dim("n"), 4, 1, kScalingWorkspaceBytes + 16);
          m.bytes += static_cast<double>(2 * 4 * p.dim("window"));  // history in, updated history out
          return m;
        },
    .tolerance = exact,
    .inputs =
        [](const Point& p, uint64_t seed) {
          // Past amaxes of an activation like x (sigma 3): between 6 and 18.
          return std::vector<HostTensor>{
              inputs::normal_f32("x", {p.dim("n")}, seed, /*tensor_id=*/0, 0.0f, kActivationStddev),
              inputs::uniform_f32("amax_history", {p.dim("window")}, seed, /*tensor_id=*/1, 6.0f, 18.0f)};
        },
    .reference =
        [](const Point& p, const std::vector<HostTensor>& in) {
          HostTensor y("y", p.dtype, in[0].shape());
          ref::AmaxHistory history(in[1].view<float>(), algorithm_of(p));
          const ref::DelayedScaling s = ref::delayed_scaling_cast(in[0].view<float>(), history, fp8_format_of(p.dtype),
                                                                  Fp8Overflow::saturate, kMargin, y.view<uint8_t>());
          HostTensor new_history("new_amax_history", DType::f32, in[1].shape());
          std::copy(history.entries().begin(), history.entries().end(), new_history.view<float>().begin());
          ReferenceResult r;
          r.outputs.push_back(std::move(y));
          r.outputs.push_back(scalar("scale", s.scale));
          r.outputs.push_back(scalar("scale_inv", s.scale_inv));
          r.outputs.push_back(scalar("amax", s.amax));
          r.outputs.push_back(std::move(new_history));
          r.outputs.push_back(scalar("next_scale", s.next_scale));
          return r;
        },
    .optimized = GAUGE_CUDA_ONLY([](const OptimizedArgs& a) {
      const optimized::precision::Fp8Scaling scaling{fp8_format_of(a.point.dtype), Fp8Overflow::saturate, kMargin};
      optimized::precision::delayed_scaled_cast(
          a.in<float>(0), a.out<uint8_t>(0), a.point.dim("n"), a.in<float>(1), static_cast<int>(a.point.dim("window")),
          algorithm_of(a.point), scaling, a.out<float>(1), a.out<float>(2), a.out<float>(3), a.out<float>(4),
          a.out<float>(5), a.state<ScalingWorkspace>().pointer, a.stream);
    }),
    .params =
        [](const Point& p) {
          return Params{{"margin", int64_t{kMargin}},
                        {"overflow", std::string("saturate")},
                        {"amax_algorithm", std::string(gauge::precision::amax_algorithm_name(algorithm_of(p)))}};
        },
    .prepare = GAUGE_CUDA_ONLY(PrepareFn(prepare_scaling)),
});

}  // namespace
}  // namespace gauge::suites::precision
