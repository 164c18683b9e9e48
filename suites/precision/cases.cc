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

// One direction of the casts; the point's dtype names the narrow format (bf16 or f16).
template <class In, class Out>
struct CastDirection {
  using Reference = void (*)(std::span<const In>, std::span<Out>);
  using Optimized = void (*)(const In*, Out*, int64_t, StreamHandle);
  const char* name;
  const char* description;
  Reference reference_bf16, reference_f16;
  Optimized optimized_bf16, optimized_f16;
};

template <class In, class Out>
bool declare(const CastDirection<In, Out>& cast) {
  // The narrow side is whichever side has 2-byte elements.
  const auto in_dtype = [](DType narrow) { return sizeof(In) == 2 ? narrow : DType::f32; };
  const auto out_dtype = [](DType narrow) { return sizeof(Out) == 2 ? narrow : DType::f32; };
  return register_case({
      .suite = "precision",
      .name = cast.name,
      .description = cast.description,
      .points = grid(kCastShapes, {DType::bf16, DType::f16}),
      .model =
          [](const Point& p) {
            const int64_t n = p.dim("n");
            CostModel m;
            m.bytes = static_cast<double>(n) * static_cast<double>(sizeof(In) + sizeof(Out));
            m.bound = Bound::memory;
            m.predicted_host_peak_bytes = n * static_cast<int64_t>(sizeof(In) + sizeof(Out));
            m.predicted_device_peak_bytes = m.predicted_host_peak_bytes;
            return m;
          },
      .tolerance = [](const Point&) { return tolerance::exact_bits(); },
      .inputs = [in_dtype](const Point& p, uint64_t seed) {
        return std::vector<HostTensor>{random_patterns(in_dtype(p.dtype), p.dim("n"), seed)};
      },
      .reference =
          [cast, out_dtype](const Point& p, const std::vector<HostTensor>& in) {
            HostTensor y("y", out_dtype(p.dtype), in[0].shape());
            (p.dtype == DType::bf16 ? cast.reference_bf16 : cast.reference_f16)(in[0].view<In>(), y.view<Out>());
            ReferenceResult r;
            r.outputs.push_back(std::move(y));
            return r;
          },
      .optimized = cast.optimized_bf16 == nullptr
                       ? OptimizedFn{}
                       : OptimizedFn([cast](const OptimizedArgs& a) {
                           (a.point.dtype == DType::bf16 ? cast.optimized_bf16 : cast.optimized_f16)(
                               a.in<In>(0), a.out<Out>(0), a.point.dim("n"), a.stream);
                         }),
  });
}

[[maybe_unused]] const bool narrow_registered = declare(CastDirection<float, uint16_t>{
    "cast_f32_to_narrow", "fp32 -> bf16 / fp16, round to nearest even, subnormals kept, quiet NaN",
    ref::cast_f32_to_bf16, ref::cast_f32_to_f16,
    GAUGE_CUDA_ONLY(optimized::precision::cast_f32_to_bf16), GAUGE_CUDA_ONLY(optimized::precision::cast_f32_to_f16)});

[[maybe_unused]] const bool widen_registered = declare(CastDirection<uint16_t, float>{
    "cast_narrow_to_f32", "bf16 / fp16 -> fp32, exact; NaN keeps sign and payload with the quiet bit set",
    ref::cast_bf16_to_f32, ref::cast_f16_to_f32,
    GAUGE_CUDA_ONLY(optimized::precision::cast_bf16_to_f32), GAUGE_CUDA_ONLY(optimized::precision::cast_f16_to_f32)});

}  // namespace
}  // namespace gauge::suites::precision
