// Fused amax + scaled fp8 cast kernels.
//
// Napkin math (H100 SXM, ~3.35 TB/s HBM, 50 MB L2). The fewest bytes are 4 (x) + 1 (y) per element.
// - Delayed scaling: the scale is known before the pass (from the history), so one kernel reads x
//   once, writes y, and reduces this tensor's amax on the way (Transformer Engine's fused cast):
//   5 bytes per element, ~0.10 ms for 2^26 elements at peak; ~20 integer/fp32 operations per element
//   (multiply, max, the rounding of fp8.cuh) keeps it memory bound. The history (<= 4 KiB) is read by
//   every block from L2; the last block to arrive reduces the per-block partials (<= 2048 words).
// - Current scaling: the scale depends on the amax of the very tensor being cast, so every element
//   must be seen before the first one can be written. Two launches on the stream, no host sync: an
//   amax pass (4 bytes per element) leaves one partial per block on the device, and the cast pass
//   reduces those partials (every block, from L2: <= 8 KiB each) and casts (5 bytes per element):
//   9 bytes per element when x does not fit in L2 (2^26 elements: 256 MiB), so expect at most
//   5/9 ~ 55% of the HBM peak against the 5-byte model; tensors of a few MiB are re-read from L2.
//   (Keeping x on chip between the phases of one cooperative launch only helps up to ~25 MB of
//   registers + shared memory on an H100, where the L2 already catches the second read.)
//
// Shape: the cast loop is that of fp8_casts.cu (16 elements per vector step: four float4 loads, one
// uint4 store; scalar head / tail in the same launch; one wave of blocks striding), block reductions
// are warp __reduce_max_sync on the |x| patterns plus one shared-memory step.
#include "optimized/precision/scaled_cast.h"

#include <cuda_runtime.h>

#include <cmath>
#include <string>

#include "optimized/precision/fp8.cuh"
#include "optimized/precision/launch_support.cuh"
#include "optimized/precision/fp8_launch.h"
#include "optimized/precision/scaling.cuh"

namespace gauge::optimized::precision {
namespace {

using gauge::precision::AmaxAlgorithm;
using fp8_launch::kThreadsPerBlock;
using fp8_launch::Split;

constexpr int64_t kElementsPerVector = 16;
constexpr int kMaxBlocks = 2048;  // partial amaxes the workspace holds (>= one wave on any current GPU)
constexpr int kMaxWindow = 1024;
constexpr int kMaxMargin = 32;
constexpr int kWarps = kThreadsPerBlock / 32;

struct Workspace {
  uint32_t partials[kMaxBlocks];
  unsigned int arrivals;
};

struct ScaleParams {
  float fp8_max;
  float margin_factor;  // 2^-margin
};

// The maximum of `value` over the block, returned to every thread. Uses `shared` (kWarps words);
// callers separate consecutive uses with the __syncthreads inside.
__device__ __forceinline__ uint32_t block_max(uint32_t value, uint32_t* shared) {
  value = __reduce_max_sync(0xFFFFFFFFu, value);
  const int warp = static_cast<int>(threadIdx.x) / 32;
  const int lane = static_cast<int>(threadIdx.x) % 32;
  if (lane == 0) shared[warp] = value;
  __syncthreads();
  uint32_t result = shared[0];
  for (int w = 1; w < kWarps; ++w) result = max(result, shared[w]);
  __syncthreads();  // shared may be reused right after
  return result;
}

__device__ __forceinline__ uint32_t max4(uint32_t m, float4 v) {
  return max(max(m, max(magnitude_bits(v.x), magnitude_bits(v.y))), max(magnitude_bits(v.z), magnitude_bits(v.w)));
}

template <Fp8Format F, bool Saturate>
__device__ __forceinline__ uint32_t scaled_encode4(float4 v, float scale) {
  return static_cast<uint32_t>(f32_to_fp8_rne<F>(apply_scale(v.x, scale), Saturate)) |
         (static_cast<uint32_t>(f32_to_fp8_rne<F>(apply_scale(v.y, scale), Saturate)) << 8) |
         (static_cast<uint32_t>(f32_to_fp8_rne<F>(apply_scale(v.z, scale), Saturate)) << 16) |
         (static_cast<uint32_t>(f32_to_fp8_rne<F>(apply_scale(v.w, scale), Saturate)) << 24);
}

// Casts this thread's share of x with `scale`; returns the max |x| pattern it saw when ReduceAmax.
template <Fp8Format F, bool Saturate, bool ReduceAmax>
__device__ __forceinline__ uint32_t cast_share(const float* __restrict__ x, uint8_t* __restrict__ y, const Split& split,
                                               float scale) {
  const int64_t first = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  uint32_t largest = 0;
  for (int64_t v = first; v < split.vectors; v += stride) {
    const int64_t i = split.vector_first(v);
    const float4* source = reinterpret_cast<const float4*>(x + i);
    const float4 a = __ldg(source);
    const float4 b = __ldg(source + 1);
    const float4 c = __ldg(source + 2);
    const float4 d = __ldg(source + 3);
    if constexpr (ReduceAmax) largest = max4(max4(max4(max4(largest, a), b), c), d);
    *reinterpret_cast<uint4*>(y + i) = make_uint4(scaled_encode4<F, Saturate>(a, scale), scaled_encode4<F, Saturate>(b, scale),
                                                  scaled_encode4<F, Saturate>(c, scale), scaled_encode4<F, Saturate>(d, scale));
  }
  for (int64_t j = first; j < split.scalar_count(); j += stride) {
    const int64_t i = split.scalar_index(j);
    const float value = x[i];
    if constexpr (ReduceAmax) largest = max(largest, magnitude_bits(value));
    y[i] = f32_to_fp8_rne<F>(apply_scale(value, scale), Saturate);
  }
  return largest;
}

// ---- Current scaling ---------------------------------------------------------------------------------

__global__ void __launch_bounds__(kThreadsPerBlock)
    amax_partials_kernel(const float* __restrict__ x, Split split, Workspace* __restrict__ workspace) {
  __shared__ uint32_t shared[kWarps];
  const int64_t first = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  uint32_t largest = 0;
  for (int64_t v = first; v < split.vectors; v += stride) {
    const float4* source = reinterpret_cast<const float4*>(x + split.vector_first(v));
    largest = max4(max4(max4(max4(largest, __ldg(source)), __ldg(source + 1)), __ldg(source + 2)), __ldg(source + 3));
  }
  for (int64_t j = first; j < split.scalar_count(); j += stride) {
    largest = max(largest, magnitude_bits(x[split.scalar_index(j)]));
  }
  largest = block_max(largest, shared);
  if (threadIdx.x == 0) workspace->partials[blockIdx.x] = largest;
}

template <Fp8Format F, bool Saturate>
__global__ void __launch_bounds__(kThreadsPerBlock)
    current_cast_kernel(const float* __restrict__ x, uint8_t* __restrict__ y, Split split,
                        const Workspace* __restrict__ workspace, ScaleParams params, float* __restrict__ amax_out,
                        float* __restrict__ scale_out, float* __restrict__ scale_inv_out) {
  __shared__ uint32_t shared[kWarps];
  // The same grid as the amax pass: gridDim.x partials.
  uint32_t largest = 0;
  for (unsigned int b = threadIdx.x; b < gridDim.x; b += blockDim.x) largest = max(largest, workspace->partials[b]);
  largest = block_max(largest, shared);
  const float amax = amax_from_magnitude_bits(largest);
  const float scale = scale_from_amax(amax, params.fp8_max, params.margin_factor);
  if (blockIdx.x == 0 && threadIdx.x == 0) {
    *amax_out = amax;
    *scale_out = scale;
    *scale_inv_out = scale_inverse(scale);
  }
  cast_share<F, Saturate, false>(x, y, split, scale);
}

// ---- Delayed scaling -----------------------------------------------------------------------------------

// The history's amax by the algorithm, over entries [0, count) (count >= 1), to every thread.
__device__ __forceinline__ uint32_t history_max(const float* __restrict__ history, int count, AmaxAlgorithm algorithm,
                                                uint32_t* shared) {
  if (algorithm == AmaxAlgorithm::most_recent) return magnitude_bits(history[0]);
  uint32_t largest = 0;
  for (int t = static_cast<int>(threadIdx.x); t < count; t += static_cast<int>(blockDim.x)) {
    largest = max(largest, magnitude_bits(history[t]));
  }
  return block_max(largest, shared);
}

template <Fp8Format F, bool Saturate>
__global__ void __launch_bounds__(kThreadsPerBlock)
    delayed_cast_kernel(const float* __restrict__ x, uint8_t* __restrict__ y, Split split,
                        const float* __restrict__ history, int window, AmaxAlgorithm algorithm, ScaleParams params,
                        Workspace* __restrict__ workspace, float* __restrict__ scale_out,
                        float* __restrict__ scale_inv_out, float* __restrict__ amax_out,
                        float* __restrict__ new_history, float* __restrict__ next_scale_out) {
  __shared__ uint32_t shared[kWarps];
  __shared__ bool last_block;
  const float history_amax = amax_from_magnitude_bits(history_max(history, window, algorithm, shared));
  const float scale = scale_from_amax(history_amax, params.fp8_max, params.margin_factor);

  const uint32_t block_largest = block_max(cast_share<F, Saturate, true>(x, y, split, scale), shared);

  // Last-block reduction: publish this block's partial, then count arrivals; the block that arrives
  // last sees every partial (each was fenced before its block's increment). atomicInc wraps to 0 at
  // gridDim.x - 1, leaving the counter ready for the next launch.
  if (threadIdx.x == 0) {
    workspace->partials[blockIdx.x] = block_largest;
    __threadfence();
    last_block = atomicInc(&workspace->arrivals, gridDim.x - 1) == gridDim.x - 1;
  }
  __syncthreads();
  if (!last_block) return;
  __threadfence();

  uint32_t largest = 0;
  for (unsigned int b = threadIdx.x; b < gridDim.x; b += blockDim.x) {
    largest = max(largest, __ldcg(&workspace->partials[b]));  // L2, not a stale L1 line
  }
  largest = block_max(largest, shared);
  const float amax = amax_from_magnitude_bits(largest);
  for (int t = static_cast<int>(threadIdx.x); t < window; t += static_cast<int>(blockDim.x)) {
    new_history[t] = t == 0 ? amax : history[t - 1];
  }
  // The new history's amax: this amax together with the entries that stay in the window.
  uint32_t next_largest = largest;
  if (algorithm == AmaxAlgorithm::max && window > 1) {
    next_largest = max(largest, history_max(history, window - 1, algorithm, shared));
  }
  if (threadIdx.x == 0) {
    *amax_out = amax;
    *scale_out = scale;
    *scale_inv_out = scale_inverse(scale);
    *next_scale_out = scale_from_amax(amax_from_magnitude_bits(next_largest), params.fp8_max, params.margin_factor);
  }
}

// ---- Launch ----------------------------------------------------------------------------------------------

ScaleParams checked_params(const char* what, const Fp8Scaling& scaling) {
  if (scaling.margin < 0 || scaling.margin > kMaxMargin) {
    launch_support::refuse(what, "margin " + std::to_string(scaling.margin) + " is outside [0, 32]");
  }
  return ScaleParams{scaling.format == Fp8Format::e4m3 ? Fp8Traits<Fp8Format::e4m3>::kMaxFinite
                                                       : Fp8Traits<Fp8Format::e5m2>::kMaxFinite,
                     std::ldexp(1.0f, -scaling.margin)};
}

void check_scalar(const char* what, const void* pointer, const char* name) {
  if (pointer == nullptr) launch_support::refuse(what, std::string("null ") + name);
}

template <template <Fp8Format, bool> class Select>
auto pick(const Fp8Scaling& s) {
  if (s.format == Fp8Format::e4m3) {
    return s.overflow == Fp8Overflow::saturate ? Select<Fp8Format::e4m3, true>::kernel
                                               : Select<Fp8Format::e4m3, false>::kernel;
  }
  return s.overflow == Fp8Overflow::saturate ? Select<Fp8Format::e5m2, true>::kernel
                                             : Select<Fp8Format::e5m2, false>::kernel;
}

template <Fp8Format F, bool Saturate>
struct CurrentKernel {
  static constexpr auto kernel = current_cast_kernel<F, Saturate>;
};
template <Fp8Format F, bool Saturate>
struct DelayedKernel {
  static constexpr auto kernel = delayed_cast_kernel<F, Saturate>;
};

}  // namespace

size_t scaling_workspace_bytes() { return sizeof(Workspace); }

void clear_scaling_workspace(void* workspace, StreamHandle stream) {
  launch_support::check(cudaMemsetAsync(workspace, 0, sizeof(Workspace), stream), "clear_scaling_workspace");
}

void current_scaled_cast(const float* x, uint8_t* y, int64_t n, const Fp8Scaling& scaling, float* amax, float* scale,
                         float* scale_inv, void* workspace, StreamHandle stream) {
  constexpr const char* what = "current_scaled_cast";
  const ScaleParams params = checked_params(what, scaling);
  for (const auto& [pointer, name] : {std::pair<const void*, const char*>{amax, "amax"}, {scale, "scale"},
                                      {scale_inv, "scale_inv"}, {workspace, "workspace"}}) {
    check_scalar(what, pointer, name);
  }
  const Split split = launch_support::checked_split(what, x, 4, y, 1, n, kElementsPerVector);
  // Launched even for n == 0: the scalars are written (amax 0, scale 1).
  const int blocks = fp8_launch::grid_blocks(split, launch_support::sm_count_of_current_device(what), kMaxBlocks);
  auto* ws = static_cast<Workspace*>(workspace);
  amax_partials_kernel<<<blocks, kThreadsPerBlock, 0, stream>>>(x, split, ws);
  launch_support::check(cudaGetLastError(), what);
  pick<CurrentKernel>(scaling)<<<blocks, kThreadsPerBlock, 0, stream>>>(x, y, split, ws, params, amax, scale,
                                                                        scale_inv);
  launch_support::check(cudaGetLastError(), what);
}

void delayed_scaled_cast(const float* x, uint8_t* y, int64_t n, const float* history, int window,
                         AmaxAlgorithm algorithm, const Fp8Scaling& scaling, float* scale, float* scale_inv,
                         float* amax, float* new_history, float* next_scale, void* workspace, StreamHandle stream) {
  constexpr const char* what = "delayed_scaled_cast";
  const ScaleParams params = checked_params(what, scaling);
  if (window < 1 || window > kMaxWindow) {
    launch_support::refuse(what, "amax history window " + std::to_string(window) + " is outside [1, 1024]");
  }
  for (const auto& [pointer, name] :
       {std::pair<const void*, const char*>{history, "history"}, {new_history, "new_history"}, {scale, "scale"},
        {scale_inv, "scale_inv"}, {amax, "amax"}, {next_scale, "next_scale"}, {workspace, "workspace"}}) {
    check_scalar(what, pointer, name);
  }
  const auto history_begin = reinterpret_cast<uintptr_t>(history);
  const auto new_begin = reinterpret_cast<uintptr_t>(new_history);
  const uintptr_t bytes = static_cast<uintptr_t>(window) * sizeof(float);
  if (history_begin < new_begin + bytes && new_begin < history_begin + bytes) {
    launch_support::refuse(what, "history and new_history overlap");
  }
  const Split split = launch_support::checked_split(what, x, 4, y, 1, n, kElementsPerVector);
  const int blocks = fp8_launch::grid_blocks(split, launch_support::sm_count_of_current_device(what), kMaxBlocks);
  pick<DelayedKernel>(scaling)<<<blocks, kThreadsPerBlock, 0, stream>>>(
      x, y, split, history, window, algorithm, params, static_cast<Workspace*>(workspace), scale, scale_inv, amax,
      new_history, next_scale);
  launch_support::check(cudaGetLastError(), what);
}

}  // namespace gauge::optimized::precision
