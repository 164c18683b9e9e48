// Fused unscale + Inf/NaN check over a gradient list, and the device-side scale update.
//
// ---- Napkin math ---------------------------------------------------------------------------------
// Unscaling reads and writes every gradient once: 8 bytes per fp32 gradient, 4 per bf16 / fp16, with
// one multiply, one compare and (16-bit) two converts per element, so the bound is HBM bandwidth.
// 1e8 fp32 gradients move 800 MB: ~0.24 ms at the H100 SXM's ~3.35 TB/s, ~0.17 ms at the H200's
// ~4.8 TB/s; 1e8 bf16 / fp16 gradients half that. A streaming kernel should reach ~85-90% of peak.
// Compute is nowhere near a limit: at ~420 G elements/s (fp32 at peak) the SMs have ~70 lane
// instructions per element to spend, and the loop uses ~6 (16-bit: ~8).
// The reciprocal of the scale is computed by every thread from the device scale (one 4-byte L2 hit
// and an IEEE reciprocal, __frcp_rn), which is cheaper than a separate launch for it.
// The found_inf flag costs nothing per element: a per-thread OR, then one warp vote at the end of the
// kernel and one store per warp that saw a non-finite value (all store the same 1.0f: no atomics).
//
// ---- Shape ---------------------------------------------------------------------------------------
// A persistent grid (one wave of 8 blocks of 256 threads per SM, fewer for short lists) strides over
// the chunk table (unscale_plan.h: 16 Ki-element chunks on each tensor's 16-byte vector grid). Per
// chunk, each thread loads kUnroll = 4 16-byte vectors (16 fp32 or 32 16-bit gradients) before it
// stores any, which keeps 64 bytes of loads in flight per thread (128 KiB per SM, well beyond the
// ~25 KiB that latency x bandwidth needs per SM); the <= 2 x 7 scalar edge elements of a chunk, or every
// element of a tensor whose input and output cannot be 16-byte aligned together, go one at a time.
// One launch per list (bf16 / fp16 / fp32 are template instances), nothing synchronizes.
//
// The plan's descriptors and chunk table are uploaded by launches whose parameters carry the bytes
// (3,840 per launch), so building a plan enqueues work without a host synchronization (a pageable
// cudaMemcpyAsync may block the host).

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <cfloat>
#include <cstring>
#include <string>
#include <vector>

#include "harness/error.h"
#include "optimized/precision/loss_scale.h"
#include "optimized/precision/launch_support.cuh"
#include "optimized/precision/unscale_plan.h"

namespace gauge::optimized::precision {
namespace {

using unscale_plan::Chunk;
using unscale_plan::ChunkSplit;
using unscale_plan::Descriptor;
using unscale_plan::kThreadsPerBlock;
using unscale_plan::kUnroll;

constexpr uint32_t kCanonicalNanF32 = 0x7FFFFFFFu;
constexpr uint32_t kCanonicalNan16 = 0x7FFFu;

// ---- One element and one 16-byte vector per gradient format ---------------------------------------

__device__ __forceinline__ uint32_t nonfinite(float g) { return fabsf(g) <= FLT_MAX ? 0u : 1u; }  // NaN: false

struct F32Grad {
  using Storage = float;
  static __device__ __forceinline__ float one(float g, float inv_scale, uint32_t& flag) {
    flag |= nonfinite(g);
    const float p = __fmul_rn(g, inv_scale);
    return isnan(p) ? __uint_as_float(kCanonicalNanF32) : p;
  }
  static __device__ __forceinline__ uint4 vector(uint4 v, float inv_scale, uint32_t& flag) {
    return make_uint4(__float_as_uint(one(__uint_as_float(v.x), inv_scale, flag)),
                      __float_as_uint(one(__uint_as_float(v.y), inv_scale, flag)),
                      __float_as_uint(one(__uint_as_float(v.z), inv_scale, flag)),
                      __float_as_uint(one(__uint_as_float(v.w), inv_scale, flag)));
  }
};

// 16-bit formats: widen (exact), multiply in fp32, round to nearest even back into the format with
// the packed converts (subnormals kept, overflow to Inf), then canonicalize NaN.
struct Bf16Grad {
  using Storage = uint16_t;
  static __device__ __forceinline__ float widen(uint32_t bits) { return __uint_as_float(bits << 16); }
  static __device__ __forceinline__ uint16_t narrow(float p) {
    return isnan(p) ? static_cast<uint16_t>(kCanonicalNan16) : __bfloat16_as_ushort(__float2bfloat16_rn(p));
  }
  static __device__ __forceinline__ uint32_t pair(uint32_t packed, float inv_scale, uint32_t& flag) {
    const float low = widen(packed & 0xFFFFu);
    const float high = __uint_as_float(packed & 0xFFFF0000u);
    flag |= nonfinite(low) | nonfinite(high);
    const float p_low = __fmul_rn(low, inv_scale);
    const float p_high = __fmul_rn(high, inv_scale);
    const __nv_bfloat162 rounded = __float22bfloat162_rn(make_float2(p_low, p_high));
    const uint32_t out_low = isnan(p_low) ? kCanonicalNan16 : __bfloat16_as_ushort(rounded.x);
    const uint32_t out_high = isnan(p_high) ? kCanonicalNan16 : __bfloat16_as_ushort(rounded.y);
    return out_low | (out_high << 16);
  }
  static __device__ __forceinline__ uint16_t one(uint16_t g, float inv_scale, uint32_t& flag) {
    const float x = widen(g);
    flag |= nonfinite(x);
    return narrow(__fmul_rn(x, inv_scale));
  }
  static __device__ __forceinline__ uint4 vector(uint4 v, float inv_scale, uint32_t& flag) {
    return make_uint4(pair(v.x, inv_scale, flag), pair(v.y, inv_scale, flag), pair(v.z, inv_scale, flag),
                      pair(v.w, inv_scale, flag));
  }
};

struct F16Grad {
  using Storage = uint16_t;
  static __device__ __forceinline__ uint32_t pair(uint32_t packed, float inv_scale, uint32_t& flag) {
    const float2 x = __half22float2(__halves2half2(__ushort_as_half(static_cast<unsigned short>(packed & 0xFFFFu)),
                                                   __ushort_as_half(static_cast<unsigned short>(packed >> 16))));
    flag |= nonfinite(x.x) | nonfinite(x.y);
    const float p_low = __fmul_rn(x.x, inv_scale);
    const float p_high = __fmul_rn(x.y, inv_scale);
    const __half2 rounded = __float22half2_rn(make_float2(p_low, p_high));
    const uint32_t out_low = isnan(p_low) ? kCanonicalNan16 : __half_as_ushort(rounded.x);
    const uint32_t out_high = isnan(p_high) ? kCanonicalNan16 : __half_as_ushort(rounded.y);
    return out_low | (out_high << 16);
  }
  static __device__ __forceinline__ uint16_t one(uint16_t g, float inv_scale, uint32_t& flag) {
    const float x = __half2float(__ushort_as_half(g));
    flag |= nonfinite(x);
    const float p = __fmul_rn(x, inv_scale);
    return isnan(p) ? static_cast<uint16_t>(kCanonicalNan16) : __half_as_ushort(__float2half_rn(p));
  }
  static __device__ __forceinline__ uint4 vector(uint4 v, float inv_scale, uint32_t& flag) {
    return make_uint4(pair(v.x, inv_scale, flag), pair(v.y, inv_scale, flag), pair(v.z, inv_scale, flag),
                      pair(v.w, inv_scale, flag));
  }
};

// ---- The unscale kernel ---------------------------------------------------------------------------
// Input and output may be the same array (in place), so the pointers are not __restrict__ and loads
// are ordinary coherent loads; every element is read and then written by the same thread only.
// Bounded to 32 registers (8 resident blocks of 256 threads per SM), so the persistent grid of
// kBlocksPerSm blocks per SM is resident in one wave.
template <class Grad>
__global__ void __launch_bounds__(kThreadsPerBlock, unscale_plan::kBlocksPerSm)
    unscale_kernel(const Descriptor* tensors, const Chunk* chunks, int chunk_count, const float* scale,
                   float* found_inf) {
  using Storage = typename Grad::Storage;
  constexpr int kWidth = unscale_plan::vector_width(sizeof(Storage));
  constexpr int kStride = kThreadsPerBlock;
  const float inv_scale = __frcp_rn(*scale);
  uint32_t flag = 0;
  for (int c = static_cast<int>(blockIdx.x); c < chunk_count; c += static_cast<int>(gridDim.x)) {
    const Chunk chunk = chunks[c];
    const Descriptor d = tensors[chunk.tensor];
    const ChunkSplit split = unscale_plan::split_chunk(chunk.begin, chunk.count, d.vector_start, kWidth);
    const Storage* in = static_cast<const Storage*>(d.in);
    Storage* out = static_cast<Storage*>(d.out);
    const uint4* in_vectors = reinterpret_cast<const uint4*>(in + split.body_begin());
    uint4* out_vectors = reinterpret_cast<uint4*>(out + split.body_begin());
    const int vectors = static_cast<int>(split.vectors);
    int v = static_cast<int>(threadIdx.x);
    for (; v + (kUnroll - 1) * kStride < vectors; v += kUnroll * kStride) {
      uint4 loaded[kUnroll];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) loaded[u] = in_vectors[v + u * kStride];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) out_vectors[v + u * kStride] = Grad::vector(loaded[u], inv_scale, flag);
    }
    for (; v < vectors; v += kStride) out_vectors[v] = Grad::vector(in_vectors[v], inv_scale, flag);
    const int scalars = static_cast<int>(split.scalar_count());
    for (int j = static_cast<int>(threadIdx.x); j < scalars; j += kStride) {
      const int64_t i = split.scalar_index(j);
      out[i] = Grad::one(in[i], inv_scale, flag);
    }
  }
  // Every thread reaches this vote (the loops above have uniform trip counts per block except for
  // their bodies), so the full mask is valid.
  if (__any_sync(0xFFFFFFFFu, flag != 0u) && threadIdx.x % 32 == 0) *found_inf = 1.0f;
}

// ---- Scale update -----------------------------------------------------------------------------------
// Products in double, rounded once to fp32 (PyTorch multiplies the fp32 scale by a double factor).
__global__ void update_scale_kernel(const float* scale_in, const int32_t* tracker_in, float* scale_out,
                                    int32_t* tracker_out, const float* found_inf, double growth_factor,
                                    double backoff_factor, int32_t growth_interval) {
  const float scale = *scale_in;
  const int32_t tracker = *tracker_in;
  if (*found_inf != 0.0f) {
    *scale_out = __double2float_rn(__dmul_rn(static_cast<double>(scale), backoff_factor));
    *tracker_out = 0;
    return;
  }
  const int32_t successful = tracker + 1;
  if (successful == growth_interval) {
    const float grown = __double2float_rn(__dmul_rn(static_cast<double>(scale), growth_factor));
    *scale_out = isfinite(grown) ? grown : scale;
    *tracker_out = 0;
  } else {
    *scale_out = scale;
    *tracker_out = successful;
  }
}

// ---- Upload through kernel parameters -------------------------------------------------------------
constexpr int kUploadWords = 240;  // 3,840 bytes: under the classic 4 KiB kernel-parameter limit
struct UploadPayload {
  uint4 words[kUploadWords];
};

__global__ void upload_kernel(uint4* destination, const UploadPayload payload, int count) {
  for (int i = static_cast<int>(threadIdx.x); i < count; i += static_cast<int>(blockDim.x)) {
    destination[i] = payload.words[i];
  }
}

// ---- Host side ------------------------------------------------------------------------------------
void check(cudaError_t status, const char* what) {
  if (status != cudaSuccess) throw RuntimeFailure(std::string("loss scale: ") + what + ": " + cudaGetErrorString(status));
}

int sm_count_of_current_device() { return launch_support::sm_count_of_current_device("loss scale: SM count"); }

void upload(void* destination, const void* bytes, size_t size, cudaStream_t stream) {
  auto* words = static_cast<uint4*>(destination);
  const auto* source = static_cast<const unsigned char*>(bytes);
  const size_t word_count = size / sizeof(uint4);  // callers pass multiples of 16 bytes
  for (size_t first = 0; first < word_count; first += kUploadWords) {
    const int count = static_cast<int>(std::min<size_t>(kUploadWords, word_count - first));
    UploadPayload payload{};
    std::memcpy(payload.words, source + first * sizeof(uint4), static_cast<size_t>(count) * sizeof(uint4));
    upload_kernel<<<1, kThreadsPerBlock, 0, stream>>>(words + first, payload, count);
    check(cudaGetLastError(), "upload launch");
  }
}

[[noreturn]] void bad_list(const std::string& what) { throw UsageError("unscale plan: " + what); }

}  // namespace

UnscalePlan::UnscalePlan(const UnscaleList& list, const WorkspaceAllocator& allocate, StreamHandle stream)
    : dtype_(list.dtype) {
  if (list.dtype != DType::f32 && list.dtype != DType::bf16 && list.dtype != DType::f16) {
    bad_list("gradients must be f32, bf16 or f16, got " + std::string(dtype_name(list.dtype)));
  }
  if (list.in.size() != list.sizes.size() || list.out.size() != list.sizes.size()) {
    bad_list("in, out and sizes have " + std::to_string(list.in.size()) + ", " + std::to_string(list.out.size()) +
             " and " + std::to_string(list.sizes.size()) + " entries");
  }
  const int element_bytes = static_cast<int>(dtype_size(list.dtype));
  std::vector<Descriptor> tensors(list.sizes.size());
  for (size_t t = 0; t < list.sizes.size(); ++t) {
    const int64_t n = list.sizes[t];
    if (n < 0) bad_list("tensor " + std::to_string(t) + " has negative size " + std::to_string(n));
    const auto in_address = reinterpret_cast<uintptr_t>(list.in[t]);
    const auto out_address = reinterpret_cast<uintptr_t>(list.out[t]);
    if (n > 0 && (list.in[t] == nullptr || list.out[t] == nullptr)) bad_list("tensor " + std::to_string(t) + " has a null pointer");
    if (n > 0 && (in_address % static_cast<uintptr_t>(element_bytes) != 0 ||
                  out_address % static_cast<uintptr_t>(element_bytes) != 0)) {
      bad_list("tensor " + std::to_string(t) + " has a pointer not aligned to its " + std::to_string(element_bytes) +
               "-byte elements");
    }
    tensors[t] = Descriptor{list.in[t], list.out[t], n, unscale_plan::vector_start(in_address, out_address, element_bytes, n)};
    if (n > 0 && tensors[t].vector_start < 0) ++scalar_tensor_count_;
    element_count_ += n;
  }
  const std::vector<Chunk> chunks = unscale_plan::build_chunks(tensors);
  tensor_count_ = static_cast<int64_t>(tensors.size());
  chunk_count_ = static_cast<int64_t>(chunks.size());
  if (chunks.empty()) return;  // nothing to do: unscale_and_check enqueues nothing

  workspace_bytes_ = unscale_plan::workspace_bytes(tensors.size(), chunks.size());
  workspace_ = allocate(workspace_bytes_);
  if (workspace_ == nullptr || reinterpret_cast<uintptr_t>(workspace_) % 16 != 0) {
    throw RuntimeFailure("unscale plan: the allocator returned a null or misaligned workspace");
  }
  const size_t descriptor_bytes = unscale_plan::round_up16(tensors.size() * sizeof(Descriptor));
  std::vector<unsigned char> staged(workspace_bytes_, 0);
  std::memcpy(staged.data(), tensors.data(), tensors.size() * sizeof(Descriptor));
  std::memcpy(staged.data() + descriptor_bytes, chunks.data(), chunks.size() * sizeof(Chunk));
  upload(workspace_, staged.data(), staged.size(), stream);
}

void UnscalePlan::unscale_and_check(const float* scale_device, float* found_inf_device, StreamHandle stream) const {
  if (chunk_count_ == 0) return;
  if (scale_device == nullptr || found_inf_device == nullptr) throw UsageError("unscale_and_check: null scale or found_inf");
  const auto* tensors = static_cast<const Descriptor*>(workspace_);
  const auto* chunks = reinterpret_cast<const Chunk*>(static_cast<const unsigned char*>(workspace_) +
                                                      unscale_plan::round_up16(static_cast<size_t>(tensor_count_) * sizeof(Descriptor)));
  const int blocks = unscale_plan::grid_blocks(chunk_count_, sm_count_of_current_device());
  const int count = static_cast<int>(chunk_count_);
  const auto s = stream;
  switch (dtype_) {
    case DType::f32:
      unscale_kernel<F32Grad><<<blocks, kThreadsPerBlock, 0, s>>>(tensors, chunks, count, scale_device, found_inf_device);
      break;
    case DType::bf16:
      unscale_kernel<Bf16Grad><<<blocks, kThreadsPerBlock, 0, s>>>(tensors, chunks, count, scale_device, found_inf_device);
      break;
    default:
      unscale_kernel<F16Grad><<<blocks, kThreadsPerBlock, 0, s>>>(tensors, chunks, count, scale_device, found_inf_device);
      break;
  }
  check(cudaGetLastError(), "unscale launch");
}

size_t UnscalePlan::workspace_bytes_bound(std::span<const int64_t> sizes) {
  size_t chunks = 0;
  for (int64_t n : sizes) chunks += static_cast<size_t>(unscale_plan::max_chunk_count(n));
  return unscale_plan::workspace_bytes(sizes.size(), chunks);
}

void update_scale(const float* scale_in, const int32_t* growth_tracker_in, float* scale_out,
                  int32_t* growth_tracker_out, const float* found_inf_device,
                  const gauge::precision::LossScalerConfig& config, StreamHandle stream) {
  gauge::precision::validate(config);
  if (scale_in == nullptr || growth_tracker_in == nullptr || scale_out == nullptr || growth_tracker_out == nullptr ||
      found_inf_device == nullptr) {
    throw UsageError("update_scale: null scale, growth tracker or found_inf pointer");
  }
  update_scale_kernel<<<1, 1, 0, stream>>>(scale_in, growth_tracker_in, scale_out, growth_tracker_out,
                                           found_inf_device, config.growth_factor, config.backoff_factor,
                                           static_cast<int32_t>(config.growth_interval));
  check(cudaGetLastError(), "update_scale launch");
}

void update_scale(float* scale_device, int32_t* growth_tracker_device, const float* found_inf_device,
                  const gauge::precision::LossScalerConfig& config, StreamHandle stream) {
  update_scale(scale_device, growth_tracker_device, scale_device, growth_tracker_device, found_inf_device, config,
               stream);
}

}  // namespace gauge::optimized::precision
