// Dynamic loss scaling: the reference state machine (PyTorch GradScaler semantics), the reference
// unscale + check, bad configurations, the unscale kernel's launch arithmetic (CPU), and the CUDA
// unscale and scale-update kernels against the reference (skipped, with the reason, without a GPU).
#include <gtest/gtest.h>

#include <bit>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "harness/error.h"
#include "harness/gpu.h"
#include "harness/tests/splitmix64.h"
#include "optimized/precision/unscale_plan.h"
#include "reference/precision/casts.h"
#include "reference/precision/loss_scaler.h"

#if defined(GAUGE_HAS_CUDA) && GAUGE_HAS_CUDA
#include <cuda_runtime.h>

#include "optimized/precision/loss_scale.h"
#endif

namespace {

namespace ref = gauge::reference::precision;
namespace up = gauge::optimized::precision::unscale_plan;
using gauge::UsageError;
using gauge::precision::LossScalerConfig;
using gauge::test_support::SplitMix64;

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNan = std::numeric_limits<float>::quiet_NaN();

// ---- State machine ---------------------------------------------------------------------------------

TEST(LossScaler, DefaultsArePyTorchGradScalers) {
  const LossScalerConfig config;
  EXPECT_EQ(config.init_scale, 65536.0);
  EXPECT_EQ(config.growth_factor, 2.0);
  EXPECT_EQ(config.backoff_factor, 0.5);
  EXPECT_EQ(config.growth_interval, 2000);
  const ref::DynamicLossScaler scaler;
  EXPECT_EQ(scaler.scale(), 65536.0f);
  EXPECT_EQ(scaler.inv_scale(), 0x1p-16f);
  EXPECT_EQ(scaler.growth_tracker(), 0);
}

TEST(LossScaler, GrowsExactlyAfterTheIntervalOfCleanSteps) {
  ref::DynamicLossScaler scaler;
  for (int step = 1; step < 2000; ++step) {
    ASSERT_TRUE(scaler.update(false)) << "a clean step must be applied (step " << step << ")";
    ASSERT_EQ(scaler.scale(), 65536.0f) << "grew early, at clean step " << step;
    ASSERT_EQ(scaler.growth_tracker(), step);
  }
  EXPECT_TRUE(scaler.update(false));
  EXPECT_EQ(scaler.scale(), 131072.0f) << "the 2000th clean step doubles the scale";
  EXPECT_EQ(scaler.growth_tracker(), 0);
  EXPECT_EQ(scaler.growths(), 1);
  // And again after another 2000.
  for (int step = 1; step < 2000; ++step) scaler.update(false);
  EXPECT_EQ(scaler.scale(), 131072.0f);
  scaler.update(false);
  EXPECT_EQ(scaler.scale(), 262144.0f);
  EXPECT_EQ(scaler.skipped_steps(), 0);
  EXPECT_EQ(scaler.steps(), 4000);
}

TEST(LossScaler, InfOrNanSkipsTheStepBacksOffAndResetsTheTracker) {
  ref::DynamicLossScaler scaler;
  for (int step = 0; step < 1500; ++step) scaler.update(false);
  ASSERT_EQ(scaler.growth_tracker(), 1500);
  EXPECT_FALSE(scaler.update(true)) << "a step with an Inf/NaN gradient must be skipped";
  EXPECT_EQ(scaler.scale(), 32768.0f);
  EXPECT_EQ(scaler.growth_tracker(), 0);
  // Consecutive overflows keep halving.
  EXPECT_FALSE(scaler.update(true));
  EXPECT_EQ(scaler.scale(), 16384.0f);
  EXPECT_EQ(scaler.skipped_steps(), 2);
  // The interval restarts from the last overflow: 1999 clean steps do not grow, the 2000th does.
  for (int step = 0; step < 1999; ++step) scaler.update(false);
  EXPECT_EQ(scaler.scale(), 16384.0f);
  scaler.update(false);
  EXPECT_EQ(scaler.scale(), 32768.0f);
}

TEST(LossScaler, FoundInfComesFromTheUnscaleOfInfAndOfNan) {
  for (const float bad : {kInf, -kInf, kNan}) {
    ref::DynamicLossScaler scaler;
    std::vector<float> grads = {1.0f, 2.0f, bad, 4.0f};
    const bool found = ref::unscale_and_check_f32(grads, scaler.inv_scale());
    EXPECT_TRUE(found) << bad;
    EXPECT_FALSE(scaler.update(found));
    EXPECT_EQ(scaler.scale(), 32768.0f);
  }
  std::vector<float> clean = {1.0f, -FLT_MAX, FLT_MIN, 0.0f};
  EXPECT_FALSE(ref::unscale_and_check_f32(clean, 1.0f));
}

TEST(LossScaler, GrowthThatWouldOverflowKeepsTheScaleAndResetsTheTracker) {
  LossScalerConfig config;
  config.init_scale = 0x1p127;
  config.growth_interval = 3;
  ref::DynamicLossScaler scaler(config);
  scaler.update(false);
  scaler.update(false);
  EXPECT_EQ(scaler.growth_tracker(), 2);
  EXPECT_TRUE(scaler.update(false));
  EXPECT_EQ(scaler.scale(), 0x1p127f) << "2^128 is not a finite fp32: the scale stays";
  EXPECT_EQ(scaler.growth_tracker(), 0);
  EXPECT_EQ(scaler.growths(), 0);
}

TEST(LossScaler, NonPowerOfTwoFactorsRoundOnceToFp32) {
  LossScalerConfig config;
  config.init_scale = 1000.0;
  config.growth_factor = 1.1;
  config.backoff_factor = 0.3;
  config.growth_interval = 1;
  ref::DynamicLossScaler scaler(config);
  scaler.update(false);
  EXPECT_EQ(scaler.scale(), static_cast<float>(1000.0 * 1.1));
  const float before = scaler.scale();
  scaler.update(true);
  EXPECT_EQ(scaler.scale(), static_cast<float>(static_cast<double>(before) * 0.3));
  EXPECT_EQ(scaler.inv_scale(), static_cast<float>(1.0 / static_cast<double>(scaler.scale())));
}

// A hand-written trace of torch.cuda.amp.GradScaler with growth_interval 3.
TEST(LossScaler, MatchesAHandWrittenTrace) {
  LossScalerConfig config;
  config.growth_interval = 3;
  ref::DynamicLossScaler scaler(config);
  struct Expected {
    bool found_inf;
    bool applied;
    float scale;
    int64_t tracker;
  };
  const std::vector<Expected> trace = {
      {false, true, 65536.0f, 1},  {false, true, 65536.0f, 2},  {false, true, 131072.0f, 0},
      {true, false, 65536.0f, 0},  {false, true, 65536.0f, 1},  {true, false, 32768.0f, 0},
      {false, true, 32768.0f, 1},  {false, true, 32768.0f, 2},  {false, true, 65536.0f, 0},
  };
  for (size_t i = 0; i < trace.size(); ++i) {
    EXPECT_EQ(scaler.update(trace[i].found_inf), trace[i].applied) << "step " << i;
    EXPECT_EQ(scaler.scale(), trace[i].scale) << "step " << i;
    EXPECT_EQ(scaler.growth_tracker(), trace[i].tracker) << "step " << i;
  }
}

TEST(LossScaler, BadConfigurationsAreUsageErrorsNamingTheField) {
  const auto expect_error = [](LossScalerConfig config, const std::string& field) {
    try {
      ref::DynamicLossScaler scaler(config);
      ADD_FAILURE() << "no error for a bad " << field;
    } catch (const UsageError& e) {
      EXPECT_NE(std::string(e.what()).find(field), std::string::npos) << e.what();
      EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos) << "one line: " << e.what();
    }
  };
  for (double scale : {std::nan(""), 0.0, -1.0, std::numeric_limits<double>::infinity(), 1e39, 1e-46}) {
    LossScalerConfig c;
    c.init_scale = scale;
    expect_error(c, "init_scale");
  }
  for (double growth : {1.0, 0.5, std::nan(""), std::numeric_limits<double>::infinity()}) {
    LossScalerConfig c;
    c.growth_factor = growth;
    expect_error(c, "growth_factor");
  }
  for (double backoff : {0.0, 1.0, -0.5, 2.0, std::nan("")}) {
    LossScalerConfig c;
    c.backoff_factor = backoff;
    expect_error(c, "backoff_factor");
  }
  for (int64_t interval : {int64_t{0}, int64_t{-5}, int64_t{1} << 31}) {
    LossScalerConfig c;
    c.growth_interval = interval;
    expect_error(c, "growth_interval");
  }
  EXPECT_THROW(ref::DynamicLossScaler(LossScalerConfig{}, kNan, 0), UsageError);
  EXPECT_THROW(ref::DynamicLossScaler(LossScalerConfig{}, 0.0f, 0), UsageError);
  EXPECT_THROW(ref::DynamicLossScaler(LossScalerConfig{}, 1024.0f, 2000), UsageError);
  EXPECT_NO_THROW(ref::DynamicLossScaler(LossScalerConfig{}, 1024.0f, 1999));
}

// ---- Unscale ---------------------------------------------------------------------------------------

TEST(Unscale, Fp32IsOneCorrectlyRoundedMultiply) {
  const float inv_scale = ref::reciprocal_scale(49152.0f);  // 1 / (3 * 2^14): not a power of two
  EXPECT_EQ(inv_scale, static_cast<float>(1.0 / 49152.0));
  std::vector<float> grads = {3.0f, -49152.0f, 1e-30f, 0x1p-149f, -0.0f};
  std::vector<float> out(grads.size());
  EXPECT_FALSE(ref::unscale_and_check_f32(grads, out, inv_scale));
  for (size_t i = 0; i < grads.size(); ++i) {
    EXPECT_EQ(std::bit_cast<uint32_t>(out[i]),
              std::bit_cast<uint32_t>(static_cast<float>(static_cast<double>(grads[i]) * inv_scale)))
        << i;
  }
  EXPECT_EQ(std::bit_cast<uint32_t>(out[4]), 0x80000000u) << "the sign of zero is kept";
}

TEST(Unscale, SixteenBitResultsRoundToNearestEvenIncludingSubnormals) {
  // fp16: 1 * 2^-25 is half the smallest subnormal: a tie, to even (zero); 3 * 2^-26 = 0.75 * 2^-24
  // rounds up to the smallest subnormal.
  std::vector<uint16_t> f16 = {ref::f32_to_f16(1.0f), ref::f32_to_f16(3.0f), ref::f32_to_f16(-1.0f)};
  EXPECT_FALSE(ref::unscale_and_check_f16(f16, 0x1p-25f));
  EXPECT_EQ(f16[0], 0x0000u);
  EXPECT_EQ(f16[1], 0x0002u) << "3 * 2^-25 = 1.5 * 2^-24: a tie between 1 and 2 subnormal ulps, to even";
  EXPECT_EQ(f16[2], 0x8000u);
  std::vector<uint16_t> f16b = {ref::f32_to_f16(3.0f)};
  ref::unscale_and_check_f16(f16b, 0x1p-26f);
  EXPECT_EQ(f16b[0], 0x0001u);
  // bf16: the fp32 product 1 + 2^-8 + 2^-20 rounds up in bf16 (above the tie).
  std::vector<uint16_t> bf16 = {ref::f32_to_bf16(1.0f)};
  ref::unscale_and_check_bf16(bf16, 1.0f + 0x1p-8f + 0x1p-20f);
  EXPECT_EQ(bf16[0], ref::f32_to_bf16(1.0f + 0x1p-7f));
}

TEST(Unscale, NonFiniteInputsAreFoundAndNanIsCanonical) {
  std::vector<uint16_t> f16 = {ref::f32_to_f16(1.0f), 0x7C00u, 0xFE01u, ref::f32_to_f16(2.0f)};
  EXPECT_TRUE(ref::unscale_and_check_f16(f16, 0.5f));
  EXPECT_EQ(f16[1], 0x7C00u) << "Inf * 0.5 stays Inf";
  EXPECT_EQ(f16[2], 0x7FFFu) << "NaN becomes the canonical quiet NaN";
  EXPECT_EQ(f16[3], ref::f32_to_f16(1.0f));
  std::vector<uint16_t> bf16 = {0xFF80u, 0xFFC1u};
  EXPECT_TRUE(ref::unscale_and_check_bf16(bf16, 0.5f));
  EXPECT_EQ(bf16[0], 0xFF80u);
  EXPECT_EQ(bf16[1], 0x7FFFu);
  std::vector<float> f32 = {std::bit_cast<float>(0xFFC00123u)};
  EXPECT_TRUE(ref::unscale_and_check_f32(f32, 0.5f));
  EXPECT_EQ(std::bit_cast<uint32_t>(f32[0]), 0x7FFFFFFFu);
  // A finite gradient that only overflows after unscaling (inv_scale > 1) is not "found".
  std::vector<uint16_t> big = {ref::f32_to_f16(60000.0f)};
  EXPECT_FALSE(ref::unscale_and_check_f16(big, 2.0f));
  EXPECT_EQ(big[0], 0x7C00u);
}

TEST(Unscale, MismatchedLengthsAreUsageErrors) {
  std::vector<float> in(3), out(4);
  EXPECT_THROW(ref::unscale_and_check_f32(in, out, 1.0f), UsageError);
}

// ---- Launch arithmetic of the CUDA kernel (what the kernel runs, checked on the CPU) ---------------

TEST(UnscalePlan, ChunksCoverEveryElementOnceWithAlignedVectors) {
  SplitMix64 rng(0x5ca1e);
  const int64_t sizes[] = {0, 1, 2, 7, 8, 9, 15, 16, 17, 31, 1000, up::kChunkElements - 1, up::kChunkElements,
                           up::kChunkElements + 1, 3 * up::kChunkElements + 5, 100003};
  for (const int element_bytes : {2, 4}) {
    const int width = up::vector_width(element_bytes);
    for (const int64_t n : sizes) {
      for (int trial = 0; trial < 8; ++trial) {
        // Addresses aligned to the element, in any 16-byte phase (same phase: vector path possible).
        const uintptr_t in_address = 0x10000 + static_cast<uintptr_t>(rng.next() % 8) * element_bytes;
        const uintptr_t out_address = trial % 2 == 0 ? in_address + 0x100000
                                                     : 0x900000 + static_cast<uintptr_t>(rng.next() % 8) * element_bytes;
        const up::Descriptor d{reinterpret_cast<const void*>(in_address), reinterpret_cast<void*>(out_address), n,
                               up::vector_start(in_address, out_address, element_bytes, n)};
        if (trial % 2 == 0 && n >= 16 / element_bytes) {
          ASSERT_GE(d.vector_start, 0) << "same phase must vectorize";
        }
        std::vector<int> hits(static_cast<size_t>(n), 0);
        const std::vector<up::Chunk> chunks = up::build_chunks(std::span<const up::Descriptor>(&d, 1));
        ASSERT_EQ(static_cast<int64_t>(chunks.size()), up::chunk_count(n, d.vector_start));
        ASSERT_LE(static_cast<int64_t>(chunks.size()), up::max_chunk_count(n));
        for (const up::Chunk& c : chunks) {
          ASSERT_LE(c.count, up::kChunkElements + 15);
          const up::ChunkSplit s = up::split_chunk(c.begin, c.count, d.vector_start, width);
          for (int64_t v = 0; v < s.vectors; ++v) {
            const int64_t first = s.vector_first(v);
            ASSERT_EQ((in_address + static_cast<uintptr_t>(first * element_bytes)) % 16, 0u);
            ASSERT_EQ((out_address + static_cast<uintptr_t>(first * element_bytes)) % 16, 0u);
            for (int k = 0; k < width; ++k) ++hits[static_cast<size_t>(first + k)];
          }
          if (d.vector_start >= 0) {
            ASSERT_LT(s.scalar_count(), 2 * width) << "only the edges are scalar";
          } else {
            ASSERT_EQ(s.vectors, 0);
          }
          for (int64_t j = 0; j < s.scalar_count(); ++j) ++hits[static_cast<size_t>(s.scalar_index(j))];
        }
        for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[static_cast<size_t>(i)], 1) << "element " << i << " of " << n;
      }
    }
  }
}

TEST(UnscalePlan, VectorStartAndGrid) {
  EXPECT_EQ(up::vector_start(0x1000, 0x2000, 4, 100), 0);
  EXPECT_EQ(up::vector_start(0x1004, 0x2004, 4, 100), 3);
  EXPECT_EQ(up::vector_start(0x1004, 0x2008, 4, 100), -1) << "different phases cannot both be aligned";
  EXPECT_EQ(up::vector_start(0x1002, 0x2002, 2, 100), 7);
  EXPECT_EQ(up::vector_start(0x1002, 0x2002, 2, 7), -1) << "the start lies beyond n";
  EXPECT_EQ(up::vector_start(0x1001, 0x2001, 2, 100), -1) << "misaligned to the element";
  EXPECT_EQ(up::grid_blocks(1, 132), 1);
  EXPECT_EQ(up::grid_blocks(100, 132), 100);
  EXPECT_EQ(up::grid_blocks(100000, 132), 132 * up::kBlocksPerSm);
  EXPECT_EQ(up::workspace_bytes(3, 10), 96u + 160u);
  EXPECT_EQ(up::workspace_bytes(1, 1), 32u + 16u);
}

// ---- CUDA kernels against the reference ------------------------------------------------------------

#if defined(GAUGE_HAS_CUDA) && GAUGE_HAS_CUDA
namespace opt = gauge::optimized::precision;
using gauge::DType;

void cuda_check(cudaError_t status, const char* what) {
  if (status != cudaSuccess) throw gauge::RuntimeFailure(std::string(what) + ": " + cudaGetErrorString(status));
}

struct DeviceBuffer {
  void* ptr = nullptr;
  explicit DeviceBuffer(size_t bytes) { cuda_check(cudaMalloc(&ptr, bytes), "cudaMalloc"); }
  ~DeviceBuffer() { cudaFree(ptr); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  template <class T = unsigned char>
  T* at(size_t byte_offset) const {
    return reinterpret_cast<T*>(static_cast<unsigned char*>(ptr) + byte_offset);
  }
};

// Random gradient bits of a format: finite values over a wide exponent range, so that unscaling
// produces normals, subnormals and zeros (and, with inv_scale > 1, overflows).
uint32_t random_finite(DType dtype, SplitMix64& rng) {
  const uint64_t r = rng.next();
  const float magnitude = std::ldexp(1.0f + static_cast<float>(r & 0xFFFFFF) * 0x1p-24f, static_cast<int>((r >> 24) % 45) - 30);
  const float x = (r >> 40) & 1 ? -magnitude : magnitude;
  if (dtype == DType::f32) return std::bit_cast<uint32_t>(x);
  return dtype == DType::bf16 ? ref::f32_to_bf16(x) : ref::f32_to_f16(x);
}

// The reference unscale of one element list in `dtype` (raw bits in 32-bit slots for simplicity).
bool reference_unscale(DType dtype, std::vector<uint32_t>& values, float inv_scale) {
  bool found = false;
  for (uint32_t& v : values) {
    if (dtype == DType::f32) {
      float x = std::bit_cast<float>(v);
      found = ref::unscale_and_check_f32(std::span<float>(&x, 1), inv_scale) || found;
      v = std::bit_cast<uint32_t>(x);
    } else {
      uint16_t x = static_cast<uint16_t>(v);
      found = (dtype == DType::bf16 ? ref::unscale_and_check_bf16(std::span<uint16_t>(&x, 1), inv_scale)
                                    : ref::unscale_and_check_f16(std::span<uint16_t>(&x, 1), inv_scale)) ||
              found;
      v = x;
    }
  }
  return found;
}

uint32_t nonfinite_bits(DType dtype, int which) {
  static const uint32_t f32[] = {0x7F800000u, 0xFF800000u, 0x7FC00001u};
  static const uint32_t bf16[] = {0x7F80u, 0xFF80u, 0xFFC1u};
  static const uint32_t f16[] = {0x7C00u, 0xFC00u, 0x7E01u};
  return (dtype == DType::f32 ? f32 : dtype == DType::bf16 ? bf16 : f16)[which % 3];
}

struct ListCase {
  std::vector<int64_t> sizes;
  std::vector<int64_t> in_offsets;   // elements into the input arena
  std::vector<int64_t> out_offsets;  // elements into the output arena (== input arena when in place)
  bool in_place = false;
};

// Ragged sizes at ragged element offsets: some tensors share a 16-byte phase between input and output
// (vector path), some do not (scalar path), with guard elements between them.
ListCase make_list(SplitMix64& rng, bool in_place) {
  ListCase c;
  c.in_place = in_place;
  c.sizes = {1, 7, 8, 33, 1000, up::kChunkElements, up::kChunkElements + 1, 2 * up::kChunkElements + 13, 0, 100003, 5};
  int64_t in_at = 3;
  int64_t out_at = 1;
  for (size_t t = 0; t < c.sizes.size(); ++t) {
    in_at += static_cast<int64_t>(rng.next() % 9) + 8;
    out_at += static_cast<int64_t>(rng.next() % 9) + 8;
    c.in_offsets.push_back(in_at);
    c.out_offsets.push_back(in_place ? in_at : out_at);
    in_at += c.sizes[t];
    out_at += c.sizes[t];
  }
  return c;
}

int64_t arena_length(const std::vector<int64_t>& offsets, const std::vector<int64_t>& sizes) {
  return offsets.back() + sizes.back() + 64;
}

// Runs one unscale over the list with Inf/NaN planted at `planted` (tensor, element) positions and
// compares both arenas (guards included) and found_inf with the reference, bit for bit.
void check_unscale(DType dtype, bool in_place, const std::vector<std::pair<size_t, int64_t>>& planted, float scale,
                   uint64_t seed) {
  SplitMix64 rng(seed);
  const ListCase list = make_list(rng, in_place);
  const size_t element = gauge::dtype_size(dtype);
  const int64_t in_length = arena_length(list.in_offsets, list.sizes);
  const int64_t out_length = in_place ? in_length : arena_length(list.out_offsets, list.sizes);
  std::vector<uint32_t> in_values(static_cast<size_t>(in_length));
  std::vector<uint32_t> out_values(static_cast<size_t>(out_length));
  for (uint32_t& v : in_values) v = random_finite(dtype, rng);
  for (uint32_t& v : out_values) v = random_finite(dtype, rng);  // guards and gaps must stay untouched
  for (size_t k = 0; k < planted.size(); ++k) {
    const auto [t, i] = planted[k];
    in_values[static_cast<size_t>(list.in_offsets[t] + i)] = nonfinite_bits(dtype, static_cast<int>(k));
  }
  const auto pack = [&](const std::vector<uint32_t>& values) {
    std::vector<unsigned char> bytes(values.size() * element);
    for (size_t i = 0; i < values.size(); ++i) {
      if (element == 4) {
        std::memcpy(bytes.data() + 4 * i, &values[i], 4);
      } else {
        const uint16_t v = static_cast<uint16_t>(values[i]);
        std::memcpy(bytes.data() + 2 * i, &v, 2);
      }
    }
    return bytes;
  };
  const std::vector<unsigned char> in_bytes = pack(in_values);
  const std::vector<unsigned char> out_bytes = pack(out_values);
  DeviceBuffer in_device(in_bytes.size());
  DeviceBuffer out_device(in_place ? 16 : out_bytes.size());
  DeviceBuffer scalars(16);  // scale, found_inf
  cuda_check(cudaMemcpy(in_device.ptr, in_bytes.data(), in_bytes.size(), cudaMemcpyHostToDevice), "upload");
  if (!in_place) cuda_check(cudaMemcpy(out_device.ptr, out_bytes.data(), out_bytes.size(), cudaMemcpyHostToDevice), "upload");
  const float host_scalars[2] = {scale, 0.0f};
  cuda_check(cudaMemcpy(scalars.ptr, host_scalars, sizeof host_scalars, cudaMemcpyHostToDevice), "upload");

  opt::UnscaleList device_list;
  device_list.dtype = dtype;
  for (size_t t = 0; t < list.sizes.size(); ++t) {
    device_list.in.push_back(in_device.at(static_cast<size_t>(list.in_offsets[t]) * element));
    device_list.out.push_back((in_place ? in_device : out_device).at(static_cast<size_t>(list.out_offsets[t]) * element));
    device_list.sizes.push_back(list.sizes[t]);
  }
  std::vector<std::unique_ptr<DeviceBuffer>> workspaces;
  const opt::UnscalePlan plan(
      device_list,
      [&workspaces](size_t bytes) {
        workspaces.push_back(std::make_unique<DeviceBuffer>(bytes));
        return workspaces.back()->ptr;
      },
      nullptr);
  if (!in_place) {
    EXPECT_GT(plan.scalar_tensor_count(), 0) << "the list should exercise the scalar path";
  }
  plan.unscale_and_check(scalars.at<float>(0), scalars.at<float>(4), nullptr);
  cuda_check(cudaDeviceSynchronize(), "unscale");

  // Expected: the reference over each tensor, everything else as it was.
  std::vector<uint32_t> expected = in_place ? in_values : out_values;
  const float inv_scale = ref::reciprocal_scale(scale);
  bool found = false;
  for (size_t t = 0; t < list.sizes.size(); ++t) {
    std::vector<uint32_t> tensor(in_values.begin() + list.in_offsets[t],
                                 in_values.begin() + list.in_offsets[t] + list.sizes[t]);
    found = reference_unscale(dtype, tensor, inv_scale) || found;
    std::copy(tensor.begin(), tensor.end(), expected.begin() + list.out_offsets[t]);
  }
  std::vector<unsigned char> actual(in_place ? in_bytes.size() : out_bytes.size());
  cuda_check(cudaMemcpy(actual.data(), in_place ? in_device.ptr : out_device.ptr, actual.size(), cudaMemcpyDeviceToHost),
             "download");
  const std::vector<unsigned char> expected_bytes = pack(expected);
  size_t mismatches = 0;
  for (size_t i = 0; i < actual.size() / element && mismatches < 5; ++i) {
    if (std::memcmp(actual.data() + i * element, expected_bytes.data() + i * element, element) != 0) {
      ++mismatches;
      ADD_FAILURE() << gauge::dtype_name(dtype) << (in_place ? " in place" : " out of place") << ": element " << i
                    << " of the arena differs";
    }
  }
  float found_device = -1.0f;
  cuda_check(cudaMemcpy(&found_device, scalars.at<float>(4), 4, cudaMemcpyDeviceToHost), "download");
  EXPECT_EQ(found_device, found ? 1.0f : 0.0f) << gauge::dtype_name(dtype);
  if (!planted.empty()) {
    EXPECT_TRUE(found);
  }
}

TEST(UnscaleCuda, MatchesTheReferenceBitForBitOnACleanList) {
  if (!gauge::gpu::available()) GTEST_SKIP() << gauge::gpu::unavailable_reason();
  for (DType dtype : {DType::f32, DType::bf16, DType::f16}) {
    for (bool in_place : {false, true}) {
      check_unscale(dtype, in_place, {}, 49152.0f, 11);
      check_unscale(dtype, in_place, {}, 0x1p-3f, 12);  // inv_scale 8: overflow to Inf after unscaling
    }
  }
}

TEST(UnscaleCuda, FindsInfAndNanPlantedAtRaggedPositions) {
  if (!gauge::gpu::available()) GTEST_SKIP() << gauge::gpu::unavailable_reason();
  // Heads, tails, chunk boundaries, a one-element tensor, the last tensor.
  const std::vector<std::vector<std::pair<size_t, int64_t>>> plantings = {
      {{0, 0}},
      {{2, 7}},
      {{6, up::kChunkElements}},
      {{7, up::kChunkElements - 1}, {7, 2 * up::kChunkElements + 12}},
      {{9, 50001}, {10, 4}, {3, 0}},
  };
  for (DType dtype : {DType::f32, DType::bf16, DType::f16}) {
    for (bool in_place : {false, true}) {
      for (size_t p = 0; p < plantings.size(); ++p) check_unscale(dtype, in_place, plantings[p], 65536.0f, 100 + p);
    }
  }
}

TEST(UnscaleCuda, ScaleUpdateFollowsTheReferenceStateMachine) {
  if (!gauge::gpu::available()) GTEST_SKIP() << gauge::gpu::unavailable_reason();
  LossScalerConfig config;
  config.growth_interval = 3;
  config.init_scale = 0x1p126;  // growth to 2^127 succeeds, then 2^128 overflows and is refused
  ref::DynamicLossScaler reference(config);
  DeviceBuffer state(16);  // scale, tracker, found_inf
  const float scale0 = static_cast<float>(config.init_scale);
  const int32_t tracker0 = 0;
  cuda_check(cudaMemcpy(state.at(0), &scale0, 4, cudaMemcpyHostToDevice), "upload");
  cuda_check(cudaMemcpy(state.at(4), &tracker0, 4, cudaMemcpyHostToDevice), "upload");
  SplitMix64 rng(7);
  for (int step = 0; step < 40; ++step) {
    const bool found_inf = step == 1 || step == 2 || rng.next() % 7 == 0;
    const float flag = found_inf ? 1.0f : 0.0f;
    cuda_check(cudaMemcpy(state.at(8), &flag, 4, cudaMemcpyHostToDevice), "upload");
    opt::update_scale(state.at<float>(0), state.at<int32_t>(4), state.at<float>(8), config, nullptr);
    reference.update(found_inf);
    float scale = 0;
    int32_t tracker = -1;
    cuda_check(cudaMemcpy(&scale, state.at(0), 4, cudaMemcpyDeviceToHost), "download");
    cuda_check(cudaMemcpy(&tracker, state.at(4), 4, cudaMemcpyDeviceToHost), "download");
    ASSERT_EQ(std::bit_cast<uint32_t>(scale), std::bit_cast<uint32_t>(reference.scale())) << "step " << step;
    ASSERT_EQ(tracker, reference.growth_tracker()) << "step " << step;
  }
  EXPECT_THROW(opt::update_scale(state.at<float>(0), state.at<int32_t>(4), state.at<float>(8),
                                 LossScalerConfig{.backoff_factor = std::nan("")}, nullptr),
               UsageError);
}

TEST(UnscaleCuda, BadListsAreUsageErrors) {
  if (!gauge::gpu::available()) GTEST_SKIP() << gauge::gpu::unavailable_reason();
  DeviceBuffer buffer(64);
  const auto allocate = [&buffer](size_t) { return buffer.ptr; };
  opt::UnscaleList list;
  list.dtype = DType::e4m3;
  EXPECT_THROW(opt::UnscalePlan(list, allocate, nullptr), UsageError);
  list.dtype = DType::f32;
  list.in = {buffer.ptr};
  list.out = {};
  list.sizes = {4};
  EXPECT_THROW(opt::UnscalePlan(list, allocate, nullptr), UsageError);
  list.out = {buffer.at(2)};
  EXPECT_THROW(opt::UnscalePlan(list, allocate, nullptr), UsageError) << "misaligned output";
  list.out = {nullptr};
  EXPECT_THROW(opt::UnscalePlan(list, allocate, nullptr), UsageError) << "null output";
}
#else
TEST(UnscaleCuda, MatchesTheReferenceBitForBitOnACleanList) { GTEST_SKIP() << gauge::gpu::unavailable_reason(); }
TEST(UnscaleCuda, FindsInfAndNanPlantedAtRaggedPositions) { GTEST_SKIP() << gauge::gpu::unavailable_reason(); }
TEST(UnscaleCuda, ScaleUpdateFollowsTheReferenceStateMachine) { GTEST_SKIP() << gauge::gpu::unavailable_reason(); }
TEST(UnscaleCuda, BadListsAreUsageErrors) { GTEST_SKIP() << gauge::gpu::unavailable_reason(); }
#endif

}  // namespace
