#include "harness/cuda/rng_fill.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <string>

#include "harness/error.h"
#include "harness/philox.h"

namespace gauge::gpu {
namespace {

constexpr int kThreadsPerBlock = 256;
constexpr int kBlocksPerSm = 8;

// Element i's 32-bit word as it is stored: the raw bits.
struct RawBits {
  using Out = uint32_t;
  __device__ __forceinline__ uint32_t operator()(uint32_t bits) const { return bits; }
};

// The host computes low + (high - low) * u with two roundings. nvcc would contract that into one FMA,
// so the multiply and add are spelled as separately rounded intrinsics; span = high - low comes from
// the host, rounded as the host rounds it.
struct Uniform {
  using Out = float;
  float low;
  float span;
  __device__ __forceinline__ float operator()(uint32_t bits) const {
    return __fadd_rn(low, __fmul_rn(span, rng::uniform01(bits)));
  }
};

__device__ __forceinline__ void store_four(uint32_t* out, uint32_t a, uint32_t b, uint32_t c, uint32_t d) {
  *reinterpret_cast<uint4*>(out) = make_uint4(a, b, c, d);
}
__device__ __forceinline__ void store_four(float* out, float a, float b, float c, float d) {
  *reinterpret_cast<float4*>(out) = make_float4(a, b, c, d);
}

// One thread per Philox block: it draws the block once and writes its four elements, with one
// 16-byte store when `out` is 16-byte aligned and the block is whole.
template <class Transform>
__global__ void __launch_bounds__(kThreadsPerBlock)
    fill_kernel(typename Transform::Out* __restrict__ out, int64_t n, uint64_t seed, uint32_t tensor_id,
                Transform transform) {
  const int64_t block_count = (n + 3) / 4;
  const bool vector_stores = reinterpret_cast<uintptr_t>(out) % 16 == 0;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t block = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; block < block_count;
       block += stride) {
    const rng::Philox4x32Counter words =
        rng::draw_block(seed, tensor_id, rng::Stream::values, static_cast<uint64_t>(block));
    const int64_t first = 4 * block;
    if (vector_stores && first + 4 <= n) {
      store_four(out + first, transform(words.w[0]), transform(words.w[1]), transform(words.w[2]),
                 transform(words.w[3]));
    } else {
      const int64_t count = n - first < 4 ? n - first : 4;
      for (int64_t k = 0; k < count; ++k) out[first + k] = transform(words.w[k]);
    }
  }
}

void check(cudaError_t status, const char* what) {
  if (status != cudaSuccess) throw RuntimeFailure(std::string(what) + ": " + cudaGetErrorString(status));
}

template <class Transform>
void launch_fill(typename Transform::Out* out, int64_t n, uint64_t seed, uint32_t tensor_id, Transform transform,
                 StreamHandle stream, const char* what) {
  if (n < 0) throw RuntimeFailure(std::string(what) + ": negative element count " + std::to_string(n));
  if (n == 0) return;
  int device = 0;
  int sm_count = 0;
  check(cudaGetDevice(&device), what);
  check(cudaDeviceGetAttribute(&sm_count, cudaDevAttrMultiProcessorCount, device), what);
  const int64_t wanted = ((n + 3) / 4 + kThreadsPerBlock - 1) / kThreadsPerBlock;
  const int64_t one_wave = static_cast<int64_t>(std::max(sm_count, 1)) * kBlocksPerSm;
  const int blocks = static_cast<int>(std::clamp<int64_t>(wanted, 1, one_wave));
  fill_kernel<<<blocks, kThreadsPerBlock, 0, stream>>>(out, n, seed, tensor_id, transform);
  check(cudaGetLastError(), what);
}

}  // namespace

void fill_philox_bits(uint32_t* out, int64_t n, uint64_t seed, uint32_t tensor_id, StreamHandle stream) {
  launch_fill(out, n, seed, tensor_id, RawBits{}, stream, "fill_philox_bits");
}

void fill_uniform(float* out, int64_t n, uint64_t seed, uint32_t tensor_id, float low, float high,
                  StreamHandle stream) {
  launch_fill(out, n, seed, tensor_id, Uniform{low, high - low}, stream, "fill_uniform");
}

}  // namespace gauge::gpu
