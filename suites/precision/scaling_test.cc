// Per-tensor fp8 scaling (reference/precision/scaling.h): amax, the scale formula and its bad inputs,
// the scaled cast, the amax history (window, max / most_recent), current and delayed scaling; the
// optimized side's host-callable scalar code (optimized/precision/scaling.cuh) against the reference;
// and the fused CUDA kernels bit for bit against the reference (skipped without a GPU).
#include "reference/precision/scaling.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <iterator>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "harness/error.h"
#include "harness/gpu.h"
#include "harness/inputs.h"
#include "harness/tensor.h"
#include "harness/tests/splitmix64.h"
#include "optimized/precision/scaling.cuh"
#include "reference/precision/fp8.h"

#if defined(GAUGE_HAS_CUDA) && GAUGE_HAS_CUDA
#include "optimized/precision/scaled_cast.h"
#endif

namespace {

namespace ref = gauge::reference::precision;
namespace opt = gauge::optimized::precision;
using gauge::UsageError;
using gauge::precision::AmaxAlgorithm;
using gauge::precision::Fp8Format;
using gauge::precision::Fp8Overflow;
using gauge::test_support::SplitMix64;

uint32_t bits_of(float x) { return std::bit_cast<uint32_t>(x); }
float float_of(uint32_t b) { return std::bit_cast<float>(b); }
constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNan = std::numeric_limits<float>::quiet_NaN();
constexpr float kFloatMax = std::numeric_limits<float>::max();

TEST(Fp8Scaling, AmaxIsTheExactLargestMagnitude) {
  EXPECT_EQ(ref::amax(std::vector<float>{}), 0.0f);
  EXPECT_EQ(ref::amax(std::vector<float>{-3.5f, 2.0f, 0x1p-149f}), 3.5f);
  EXPECT_EQ(ref::amax(std::vector<float>{-0.0f}), 0.0f);
  EXPECT_EQ(ref::amax(std::vector<float>{1.0f, -kInf}), kInf);
  EXPECT_EQ(bits_of(ref::amax(std::vector<float>{1.0f, float_of(0xFFA12345u), kInf})), 0x7FC00000u);  // canonical NaN
  EXPECT_EQ(ref::amax(std::vector<float>{0x1.FFFFFEp-3f, -0x1.FFFFFCp-3f}), 0x1.FFFFFEp-3f);
}

TEST(Fp8Scaling, ScaleFormula) {
  EXPECT_EQ(ref::scale_from_amax(448.0f, Fp8Format::e4m3, 0), 1.0f);
  EXPECT_EQ(ref::scale_from_amax(57344.0f, Fp8Format::e5m2, 0), 1.0f);
  EXPECT_EQ(ref::scale_from_amax(448.0f, Fp8Format::e4m3, 3), 0.125f);
  EXPECT_EQ(ref::scale_from_amax(1.0f, Fp8Format::e4m3, 1), 224.0f);
  EXPECT_EQ(ref::scale_from_amax(3.0f, Fp8Format::e4m3, 0), static_cast<float>(448.0 / 3.0));  // rounded once
  EXPECT_EQ(ref::scale_from_amax(0.0f, Fp8Format::e4m3, 5), 1.0f);  // zero amax: neutral scale
  // 448 / 2^-149 overflows fp32: clamped to FLT_MAX, then the margin applies.
  EXPECT_EQ(ref::scale_from_amax(0x1p-149f, Fp8Format::e4m3, 0), kFloatMax);
  EXPECT_EQ(ref::scale_from_amax(0x1p-149f, Fp8Format::e4m3, 1), kFloatMax / 2);
  EXPECT_EQ(ref::scale_from_amax(kFloatMax, Fp8Format::e4m3, 0), static_cast<float>(448.0 / static_cast<double>(kFloatMax)));
  // A huge amax with a large margin would underflow the scale (to 0 or a subnormal whose inverse is
  // Inf): it is held at FLT_MIN, a usable scale under which amax still fits.
  for (const int margin : {20, 32}) {
    const float scale = ref::scale_from_amax(kFloatMax, Fp8Format::e4m3, margin);
    EXPECT_EQ(scale, 0x1p-126f) << "margin " << margin;
    EXPECT_TRUE(std::isfinite(ref::scale_inverse(scale)));
    std::vector<uint8_t> code(1);
    ref::scaled_cast(std::vector<float>{kFloatMax}, scale, Fp8Format::e4m3, Fp8Overflow::saturate, code);
    EXPECT_EQ(ref::fp8_to_f32(code[0], Fp8Format::e4m3), 4.0f);  // FLT_MAX * 2^-126 = 4 - 2^-21 -> 4
  }
  EXPECT_EQ(ref::scale_inverse(4.0f), 0.25f);
  EXPECT_EQ(ref::scale_inverse(3.0f), static_cast<float>(1.0 / 3.0));
}

TEST(Fp8Scaling, BadInputIsAUsageError) {
  EXPECT_THROW(ref::scale_from_amax(kNan, Fp8Format::e4m3, 0), UsageError);
  EXPECT_THROW(ref::scale_from_amax(kInf, Fp8Format::e4m3, 0), UsageError);
  EXPECT_THROW(ref::scale_from_amax(-1.0f, Fp8Format::e4m3, 0), UsageError);
  EXPECT_THROW(ref::scale_from_amax(1.0f, Fp8Format::e4m3, -1), UsageError);
  EXPECT_THROW(ref::scale_from_amax(1.0f, Fp8Format::e4m3, 33), UsageError);
  std::vector<float> x = {1.0f, 2.0f};
  std::vector<uint8_t> y(2);
  for (const float bad : {kNan, kInf, -kInf, 0.0f, -0.0f, -2.0f}) {
    EXPECT_THROW(ref::scaled_cast(x, bad, Fp8Format::e4m3, Fp8Overflow::saturate, y), UsageError) << bad;
    EXPECT_THROW(ref::scale_inverse(bad), UsageError) << bad;
  }
  // A tensor holding NaN has a NaN amax: current scaling refuses it, with a clear message.
  std::vector<float> with_nan = {1.0f, kNan};
  try {
    ref::current_scaling_cast(with_nan, Fp8Format::e4m3, Fp8Overflow::saturate, 0, y);
    ADD_FAILURE() << "no UsageError";
  } catch (const UsageError& e) {
    EXPECT_NE(std::string(e.what()).find("amax"), std::string::npos) << e.what();
  }
  EXPECT_THROW(ref::AmaxHistory(0, AmaxAlgorithm::max), UsageError);
  EXPECT_THROW(ref::AmaxHistory(1025, AmaxAlgorithm::max), UsageError);
  EXPECT_THROW(ref::AmaxHistory(std::vector<float>{1.0f, -1.0f}, AmaxAlgorithm::max), UsageError);
  ref::AmaxHistory history(4, AmaxAlgorithm::max);
  EXPECT_THROW(history.record(-0.5f), UsageError);
  std::vector<uint8_t> short_y(1);
  EXPECT_THROW(ref::scaled_cast(x, 1.0f, Fp8Format::e4m3, Fp8Overflow::saturate, short_y), std::invalid_argument);
}

TEST(Fp8Scaling, ScaledCastIsTheCastOfTheRoundedProduct) {
  SplitMix64 rng(3);
  std::vector<float> x(5000);
  for (float& v : x) v = float_of(rng.next_u32());
  for (const float scale : {1.0f, 0.37f, 1234.5f, 0x1p-100f, kFloatMax}) {
    for (const Fp8Format format : {Fp8Format::e4m3, Fp8Format::e5m2}) {
      for (const Fp8Overflow overflow : {Fp8Overflow::saturate, Fp8Overflow::non_saturating}) {
        std::vector<uint8_t> y(x.size());
        ref::scaled_cast(x, scale, format, overflow, y);
        for (size_t i = 0; i < x.size(); ++i) {
          const float product = std::isnan(x[i]) ? x[i] : x[i] * scale;  // fp32 multiply, round to nearest
          ASSERT_EQ(y[i], ref::f32_to_fp8(product, format, overflow)) << i << " scale " << scale;
        }
      }
    }
  }
}

TEST(Fp8Scaling, HistoryWindowAndAlgorithms) {
  ref::AmaxHistory max_history(3, AmaxAlgorithm::max);
  ref::AmaxHistory recent_history(3, AmaxAlgorithm::most_recent);
  EXPECT_EQ(max_history.amax(), 0.0f);  // zeros until filled
  for (const float a : {5.0f, 2.0f, 1.0f, 0.5f}) {
    max_history.record(a);
    recent_history.record(a);
  }
  // Window of 3, newest first: {0.5, 1, 2}; 5 has left the window.
  EXPECT_EQ(std::vector<float>(max_history.entries().begin(), max_history.entries().end()),
            (std::vector<float>{0.5f, 1.0f, 2.0f}));
  EXPECT_EQ(max_history.amax(), 2.0f);
  EXPECT_EQ(recent_history.amax(), 0.5f);
}

TEST(Fp8Scaling, CurrentAndDelayedScalingCompose) {
  const gauge::HostTensor t = gauge::inputs::normal_f32("x", {4099}, 9, 0, 0.0f, 3.0f);
  const auto x = t.view<float>();
  std::vector<uint8_t> y(x.size()), y_check(x.size());
  const ref::CurrentScaling current = ref::current_scaling_cast(x, Fp8Format::e4m3, Fp8Overflow::saturate, 1, y);
  EXPECT_EQ(current.amax, ref::amax(x));
  EXPECT_EQ(current.scale, ref::scale_from_amax(current.amax, Fp8Format::e4m3, 1));
  EXPECT_EQ(current.scale_inv, ref::scale_inverse(current.scale));
  ref::scaled_cast(x, current.scale, Fp8Format::e4m3, Fp8Overflow::saturate, y_check);
  EXPECT_EQ(y, y_check);
  // With margin 1 the largest element lands on fp8_max / 2 at most: nothing saturates.
  for (const uint8_t code : y) EXPECT_LE(std::fabs(ref::fp8_to_f32(code, Fp8Format::e4m3)), 224.0f);

  ref::AmaxHistory history(std::vector<float>{2.0f, 40.0f, 1.0f}, AmaxAlgorithm::max);
  const ref::DelayedScaling delayed = ref::delayed_scaling_cast(x, history, Fp8Format::e5m2, Fp8Overflow::non_saturating, 0, y);
  EXPECT_EQ(delayed.scale, ref::scale_from_amax(40.0f, Fp8Format::e5m2, 0));
  EXPECT_EQ(delayed.amax, ref::amax(x));
  EXPECT_EQ(history.entries()[0], delayed.amax);
  EXPECT_EQ(history.entries()[1], 2.0f);
  EXPECT_EQ(history.entries()[2], 40.0f);
  EXPECT_EQ(delayed.next_scale, ref::scale_from_amax(std::max(delayed.amax, 40.0f), Fp8Format::e5m2, 0));
  ref::scaled_cast(x, delayed.scale, Fp8Format::e5m2, Fp8Overflow::non_saturating, y_check);
  EXPECT_EQ(y, y_check);
}

// ---- The optimized side's host-callable scalar code ---------------------------------------------------

TEST(Fp8ScalingBitCode, ScaleAndInverseEqualReference) {
  SplitMix64 rng(17);
  std::vector<float> amaxes = {0.0f, 0x1p-149f, 0x1p-126f, 1e-36f, 1.0f, 3.0f, 448.0f, 57344.0f, kFloatMax};
  for (int i = 0; i < 200000; ++i) amaxes.push_back(float_of(rng.next_u32() & 0x7F7FFFFFu));  // finite, >= 0
  int64_t mismatches = 0;
  for (const float amax : amaxes) {
    for (const int margin : {0, 1, 7, 32}) {
      for (const Fp8Format format : {Fp8Format::e4m3, Fp8Format::e5m2}) {
        const float expected = ref::scale_from_amax(amax, format, margin);
        const float actual = opt::scale_from_amax(amax, static_cast<float>(ref::fp8_max_finite(format)), std::ldexp(1.0f, -margin));
        if (bits_of(expected) != bits_of(actual) && ++mismatches <= 10) {
          ADD_FAILURE() << "amax " << amax << " margin " << margin << ": " << expected << " vs " << actual;
        }
        if (expected > 0.0f && bits_of(ref::scale_inverse(expected)) != bits_of(opt::scale_inverse(expected)) &&
            ++mismatches <= 10) {
          ADD_FAILURE() << "scale_inv of " << expected;
        }
      }
    }
  }
  EXPECT_EQ(mismatches, 0);
  // Where the reference refuses, the device flags: NaN scale.
  EXPECT_TRUE(std::isnan(opt::scale_from_amax(kNan, 448.0f, 1.0f)));
  EXPECT_TRUE(std::isnan(opt::scale_from_amax(kInf, 448.0f, 1.0f)));
  EXPECT_EQ(bits_of(opt::amax_from_magnitude_bits(0x7F812345u)), 0x7FC00000u);
  EXPECT_EQ(opt::amax_from_magnitude_bits(bits_of(3.0f)), 3.0f);
  // The product: NaN passes through, the rest is the fp32 product.
  EXPECT_EQ(bits_of(opt::apply_scale(float_of(0xFFA00001u), 2.0f)), 0xFFA00001u);
  EXPECT_EQ(opt::apply_scale(3.0f, 0.5f), 1.5f);
}

// The kernels reduce amax as the integer maximum of |x| patterns over any partition of the tensor
// (threads, blocks, partials) and decode it once; with NaN (any sign and payload), -0, Inf and
// subnormals mixed in, that must be the reference's amax bit for bit, whatever the partition.
TEST(Fp8ScalingBitCode, PatternMaximumOverAnyPartitionIsTheReferenceAmax) {
  SplitMix64 rng(23);
  const uint32_t specials[] = {0x80000000u, 0x00000000u, 0x00000001u, 0x807FFFFFu, 0x7F800000u, 0xFF800000u,
                               0x7F800001u, 0xFFC00000u, 0xFFFFFFFFu, 0x7F7FFFFFu, 0xFF7FFFFFu};
  for (int trial = 0; trial < 2000; ++trial) {
    std::vector<float> x(static_cast<size_t>(rng.next_u32() % 300));
    for (float& v : x) {
      const uint32_t pick = rng.next_u32() % 64;
      // Mostly finite values, now and then a special one (trial 0 .. 99 without NaN / Inf).
      v = pick < std::size(specials) && (trial >= 100 || pick < 4) ? float_of(specials[pick])
                                                                 : float_of(rng.next_u32() & 0xC7FFFFFFu);
    }
    const uint32_t chunks = 1 + rng.next_u32() % 7;  // "blocks", each reduced separately, then combined
    uint32_t largest = 0;
    for (uint32_t c = 0; c < chunks; ++c) {
      uint32_t partial = 0;
      for (size_t i = c; i < x.size(); i += chunks) partial = std::max(partial, opt::magnitude_bits(x[i]));
      largest = std::max(largest, partial);
    }
    ASSERT_EQ(bits_of(opt::amax_from_magnitude_bits(largest)), bits_of(ref::amax(x))) << "trial " << trial;
  }
}

// The delayed kernel's history update and next scale, written as the kernel does it (new entry 0 is
// this amax, entries 1.. shift down; next amax = max(amax, history[0 .. window-2]) or amax), against
// the reference's AmaxHistory::record / amax.
TEST(Fp8ScalingBitCode, DelayedHistoryUpdateEqualsReference) {
  SplitMix64 rng(29);
  for (const AmaxAlgorithm algorithm : {AmaxAlgorithm::max, AmaxAlgorithm::most_recent}) {
    for (const int window : {1, 2, 3, 16, 1024}) {
      std::vector<float> history(static_cast<size_t>(window));
      for (float& h : history) h = rng.next_u32() % 5 == 0 ? 0.0f : rng.uniform(0.0f, 100.0f);
      ref::AmaxHistory reference(history, algorithm);
      for (int step = 0; step < 8; ++step) {
        const float amax = step == 3 ? 0.0f : rng.uniform(0.0f, 120.0f);
        const float scale =
            opt::scale_from_amax(opt::amax_from_magnitude_bits(
                                     algorithm == AmaxAlgorithm::most_recent
                                         ? opt::magnitude_bits(history[0])
                                         : opt::magnitude_bits(*std::max_element(history.begin(), history.end()))),
                                 448.0f, 0.5f);
        ASSERT_EQ(bits_of(scale), bits_of(ref::scale_from_amax(reference.amax(), Fp8Format::e4m3, 1)));
        uint32_t next = opt::magnitude_bits(amax);
        if (algorithm == AmaxAlgorithm::max) {
          for (int t = 0; t + 1 < window; ++t) next = std::max(next, opt::magnitude_bits(history[static_cast<size_t>(t)]));
        }
        std::vector<float> updated(history.size());
        for (size_t t = 0; t < updated.size(); ++t) updated[t] = t == 0 ? amax : history[t - 1];
        reference.record(amax);
        ASSERT_EQ(std::vector<float>(reference.entries().begin(), reference.entries().end()), updated);
        ASSERT_EQ(bits_of(opt::scale_from_amax(opt::amax_from_magnitude_bits(next), 448.0f, 0.5f)),
                  bits_of(ref::scale_from_amax(reference.amax(), Fp8Format::e4m3, 1)))
            << "window " << window << " step " << step;
        history = updated;
      }
    }
  }
}

// ---- CUDA: the fused kernels against the reference -------------------------------------------------------

#if defined(GAUGE_HAS_CUDA) && GAUGE_HAS_CUDA

struct DeviceRun {
  std::vector<uint8_t> y;
  float scale = 0, scale_inv = 0, amax = 0, next_scale = 0;
  std::vector<float> new_history;
};

std::vector<float> scaled_normals(size_t n, uint64_t seed, float stddev) {
  const gauge::HostTensor t = gauge::inputs::normal_f32("x", {static_cast<int64_t>(n)}, seed, 0, 0.0f, stddev);
  return std::vector<float>(t.view<float>().begin(), t.view<float>().end());
}

#endif

TEST(CudaFp8Scaling, CurrentAndDelayedBitIdenticalToReference) {
  if (!gauge::gpu::available()) GTEST_SKIP() << gauge::gpu::unavailable_reason();
#if defined(GAUGE_HAS_CUDA) && GAUGE_HAS_CUDA
  auto session = gauge::gpu::Session::open();
  const auto stream = session->stream();
  for (const size_t n : {size_t{0}, size_t{1}, size_t{15}, size_t{17}, size_t{4099}, (size_t{1} << 20) + 3}) {
    for (const int64_t offset : {int64_t{0}, int64_t{1}, int64_t{5}}) {
      const std::vector<float> x = scaled_normals(n, 100 + n, 7.0f);
      session->begin_case();
      gauge::HostTensor host_x("x", gauge::DType::f32, {static_cast<int64_t>(n) + offset + 1});
      std::copy(x.begin(), x.end(), host_x.view<float>().begin() + offset);
      const gauge::DeviceTensor device_x = session->upload(host_x);
      const gauge::DeviceTensor device_y = session->allocate_poisoned("y", gauge::DType::e4m3, {static_cast<int64_t>(n) + offset + 1});
      const gauge::DeviceTensor scalars = session->allocate_poisoned("s", gauge::DType::f32, {8});
      void* workspace = session->workspace(opt::scaling_workspace_bytes());
      opt::clear_scaling_workspace(workspace, stream);
      const auto* xd = static_cast<const float*>(device_x.ptr) + offset;
      auto* yd = static_cast<uint8_t*>(device_y.ptr) + offset;
      auto* s = static_cast<float*>(scalars.ptr);
      for (const Fp8Format format : {Fp8Format::e4m3, Fp8Format::e5m2}) {
        for (const Fp8Overflow overflow : {Fp8Overflow::saturate, Fp8Overflow::non_saturating}) {
          const opt::Fp8Scaling scaling{format, overflow, 1};
          SCOPED_TRACE("n=" + std::to_string(n) + " offset=" + std::to_string(offset));
          // Current scaling.
          std::vector<uint8_t> expected(n);
          const ref::CurrentScaling want = ref::current_scaling_cast(x, format, overflow, 1, expected);
          opt::current_scaled_cast(xd, yd, static_cast<int64_t>(n), scaling, s, s + 1, s + 2, workspace, stream);
          session->synchronize();
          gauge::HostTensor got_y = session->download(device_y);
          gauge::HostTensor got_s = session->download(scalars);
          EXPECT_EQ(std::vector<uint8_t>(got_y.view<uint8_t>().begin() + offset, got_y.view<uint8_t>().begin() + offset + static_cast<int64_t>(n)), expected);
          EXPECT_EQ(bits_of(got_s.view<float>()[0]), bits_of(want.amax));
          EXPECT_EQ(bits_of(got_s.view<float>()[1]), bits_of(want.scale));
          EXPECT_EQ(bits_of(got_s.view<float>()[2]), bits_of(want.scale_inv));
          // Delayed scaling, twice in a row (the arrival counter must reset itself), both algorithms.
          for (const AmaxAlgorithm algorithm : {AmaxAlgorithm::max, AmaxAlgorithm::most_recent}) {
            const std::vector<float> entries = {3.0f, 90.0f, 0.0f, 12.0f, 1.0f};
            gauge::HostTensor host_history("h", gauge::DType::f32, {5});
            std::copy(entries.begin(), entries.end(), host_history.view<float>().begin());
            const gauge::DeviceTensor history = session->upload(host_history);
            const gauge::DeviceTensor new_history = session->allocate_poisoned("nh", gauge::DType::f32, {5});
            ref::AmaxHistory reference_history(entries, algorithm);
            const ref::DelayedScaling delayed = ref::delayed_scaling_cast(x, reference_history, format, overflow, 1, expected);
            for (int repeat = 0; repeat < 2; ++repeat) {
              opt::delayed_scaled_cast(xd, yd, static_cast<int64_t>(n), static_cast<const float*>(history.ptr), 5, algorithm,
                                       scaling, s, s + 1, s + 2, static_cast<float*>(new_history.ptr), s + 3, workspace, stream);
              session->synchronize();
              got_y = session->download(device_y);
              got_s = session->download(scalars);
              const gauge::HostTensor got_h = session->download(new_history);
              EXPECT_EQ(std::vector<uint8_t>(got_y.view<uint8_t>().begin() + offset, got_y.view<uint8_t>().begin() + offset + static_cast<int64_t>(n)), expected);
              EXPECT_EQ(bits_of(got_s.view<float>()[0]), bits_of(delayed.scale));
              EXPECT_EQ(bits_of(got_s.view<float>()[1]), bits_of(delayed.scale_inv));
              EXPECT_EQ(bits_of(got_s.view<float>()[2]), bits_of(delayed.amax));
              EXPECT_EQ(bits_of(got_s.view<float>()[3]), bits_of(delayed.next_scale));
              for (int k = 0; k < 5; ++k) EXPECT_EQ(got_h.view<float>()[k], reference_history.entries()[k]) << k;
            }
          }
        }
      }
    }
  }
#endif
}

}  // namespace
