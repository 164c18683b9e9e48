// Precision casts, declared once: fp32 -> bf16 / fp16 and back. Inputs are raw Philox bit patterns,
// so every run covers normals, subnormals, zeros, Inf and NaN payloads of both signs; the rule is
// bit-exactness (one correctly rounded operation has one answer).
#include <cstring>

#include "harness/case.h"
#include "harness/inputs.h"
#include "reference/precision/casts.h"
#if GAUGE_HAS_CUDA
#include "optimized/precision/casts.h"
#endif

namespace gauge::suites::precision {
namespace {

namespace ref = gauge::reference::precision;

// A ragged size for ctest, and 2^26 elements (256 MiB of fp32) for bandwidth.
const std::vector<ShapeSpec> kCastShapes = {
    {{{"n", (1 << 20) + 3}}, true},
    {{{"n", 1 << 26}}, false},
};

CostModel cast_model(const Point& p, size_t in_bytes, size_t out_bytes) {
  const int64_t n = p.dim("n");
  CostModel m;
  m.bytes = static_cast<double>(n) * static_cast<double>(in_bytes + out_bytes);
  m.bound = Bound::memory;
  m.predicted_host_peak_bytes = n * static_cast<int64_t>(in_bytes + out_bytes);
  m.predicted_device_peak_bytes = m.predicted_host_peak_bytes;
  return m;
}

HostTensor random_patterns(DType dtype, int64_t n, uint64_t seed) {
  const HostTensor words = inputs::philox_u32("x", {n}, seed, /*tensor_id=*/0);
  HostTensor patterns("x", dtype, {n});
  if (dtype_size(dtype) == 4) {
    std::memcpy(patterns.data(), words.data(), words.size_bytes());
  } else {
    auto out = patterns.view<uint16_t>();
    auto in = words.view<uint32_t>();
    for (size_t i = 0; i < out.size(); ++i) out[i] = static_cast<uint16_t>(in[i] >> 16);
  }
  return patterns;
}

GAUGE_REGISTER_CASE({
    .suite = "precision",
    .name = "cast_f32_to_narrow",
    .description = "fp32 -> bf16 / fp16, round to nearest even, subnormals kept, quiet NaN",
    .points = grid(kCastShapes, {DType::bf16, DType::f16}),
    .model = [](const Point& p) { return cast_model(p, 4, 2); },
    .tolerance = [](const Point&) { return tolerance::exact_bits(); },
    .inputs = [](const Point& p, uint64_t seed) { return std::vector<HostTensor>{random_patterns(DType::f32, p.dim("n"), seed)}; },
    .reference =
        [](const Point& p, const std::vector<HostTensor>& in) {
          HostTensor y("y", p.dtype, in[0].shape());
          if (p.dtype == DType::bf16) {
            ref::cast_f32_to_bf16(in[0].view<float>(), y.view<uint16_t>());
          } else {
            ref::cast_f32_to_f16(in[0].view<float>(), y.view<uint16_t>());
          }
          ReferenceResult r;
          r.outputs.push_back(std::move(y));
          return r;
        },
    .optimized = GAUGE_CUDA_ONLY([](const OptimizedArgs& a) {
      const int64_t n = a.point.dim("n");
      if (a.point.dtype == DType::bf16) {
        optimized::precision::cast_f32_to_bf16(a.in<float>(0), a.out<uint16_t>(0), n, a.stream);
      } else {
        optimized::precision::cast_f32_to_f16(a.in<float>(0), a.out<uint16_t>(0), n, a.stream);
      }
    }),
});

GAUGE_REGISTER_CASE({
    .suite = "precision",
    .name = "cast_narrow_to_f32",
    .description = "bf16 / fp16 -> fp32, exact; NaN keeps sign and payload with the quiet bit set",
    .points = grid(kCastShapes, {DType::bf16, DType::f16}),
    .model = [](const Point& p) { return cast_model(p, 2, 4); },
    .tolerance = [](const Point&) { return tolerance::exact_bits(); },
    .inputs = [](const Point& p, uint64_t seed) { return std::vector<HostTensor>{random_patterns(p.dtype, p.dim("n"), seed)}; },
    .reference =
        [](const Point& p, const std::vector<HostTensor>& in) {
          HostTensor y("y", DType::f32, in[0].shape());
          if (p.dtype == DType::bf16) {
            ref::cast_bf16_to_f32(in[0].view<uint16_t>(), y.view<float>());
          } else {
            ref::cast_f16_to_f32(in[0].view<uint16_t>(), y.view<float>());
          }
          ReferenceResult r;
          r.outputs.push_back(std::move(y));
          return r;
        },
    .optimized = GAUGE_CUDA_ONLY([](const OptimizedArgs& a) {
      const int64_t n = a.point.dim("n");
      if (a.point.dtype == DType::bf16) {
        optimized::precision::cast_bf16_to_f32(a.in<uint16_t>(0), a.out<float>(0), n, a.stream);
      } else {
        optimized::precision::cast_f16_to_f32(a.in<uint16_t>(0), a.out<float>(0), n, a.stream);
      }
    }),
});

}  // namespace
}  // namespace gauge::suites::precision
