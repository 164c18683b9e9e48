// Fused pointwise kernels: bias + activation forward, activation backward, dropout forward/backward.
//
// ---- Napkin math ---------------------------------------------------------------------------------------
// All are streams with a handful of flops per element, so HBM bandwidth is the bound:
//   bias + act forward   read x, write y        (bias: cols elements, L2-resident)   8 B/elem fp32, 4 B bf16
//   activation backward  read x, dy, write dx                                        12 B/elem fp32, 6 B bf16
//   dropout fwd / bwd    read x, write y                                             8 B/elem fp32, 4 B bf16
// 8192 x 4096 fp32 bias+gelu: 268 MB -> 80 us at 3.35 TB/s (H100 SXM); target >= 85% of that.
// Compute per element: gelu ~20 instructions (expf ~8, one IEEE division ~8), silu a little less;
// dropout one Philox4x32-10 (~70 instructions) per 4 elements, ~18 per element plus the compare and
// multiply. At ~29 T lane-instructions/s an H100 affords ~70 instructions per fp32 element at full
// bandwidth (8 B/elem, ~420 G elem/s), ~35 per bf16 element: everything stays memory-bound, bf16
// dropout with least margin.
//
// Shape: 256 threads, grid-stride over 16-byte vectors (4 fp32 or 8 bf16/fp16 elements) with all loads
// of a step issued before the math, grid capped at 8192 blocks. The bias+activation kernel takes the
// vector path when cols is a multiple of the vector width (then no vector crosses a row and the bias
// vector is aligned too), a scalar path otherwise; the flat kernels run their vector body on
// floor(n / V) vectors and finish the < V tail elements with scalar steps. Dropout vectors start at a
// multiple of 4, so one Philox block serves 4 elements, exactly the words reference/nn's
// element-by-element rule picks (bits_at(seed, key, dropout, i) = block i/4, word i%4).
#include "optimized/nn/activation.cuh"
#include "optimized/nn/device.cuh"
#include "optimized/nn/layers.h"

#include "harness/philox.h"

namespace gauge::optimized::nn {
namespace detail {
namespace {

using launch::kPointwiseThreads;

template <class T>
constexpr int kVector = launch::vector_width(sizeof(T));

__device__ __forceinline__ int64_t grid_stride() { return static_cast<int64_t>(gridDim.x) * blockDim.x; }
__device__ __forceinline__ int64_t thread_index() {
  return static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}

// ---- Bias + activation ---------------------------------------------------------------------------------

template <class T, int V, Activation A>
__global__ void __launch_bounds__(kPointwiseThreads)
    bias_activation_kernel(const T* __restrict__ x, const T* __restrict__ bias, T* __restrict__ y, int64_t vectors,
                           int64_t cols) {
  for (int64_t v = thread_index(); v < vectors; v += grid_stride()) {
    const int64_t i = v * V;
    float z[V];
    load_vector<T, V>(x + i, z);
    if (bias != nullptr) {
      float b[V];
      load_vector<T, V>(bias + i % cols, b);  // cols % V == 0 on the vector path: no row is crossed
#pragma unroll
      for (int k = 0; k < V; ++k) z[k] = __fadd_rn(z[k], b[k]);
    }
#pragma unroll
    for (int k = 0; k < V; ++k) z[k] = activate<A>(z[k]);
    store_vector<T, V>(y + i, z);
  }
}

template <class T, Activation A>
void launch_bias_activation(const PointwiseShape& s, const void* x, const void* bias, void* y, cudaStream_t stream) {
  const int64_t n = s.rows * s.cols;
  if (n == 0) return;
  const bool vector_path = s.cols % kVector<T> == 0;
  const int v = vector_path ? kVector<T> : 1;
  const auto blocks = static_cast<unsigned>(launch::pointwise_blocks(n, v));
  const auto* xt = static_cast<const T*>(x);
  const auto* bt = static_cast<const T*>(bias);
  auto* yt = static_cast<T*>(y);
  if (vector_path) {
    bias_activation_kernel<T, kVector<T>, A><<<blocks, kPointwiseThreads, 0, stream>>>(xt, bt, yt, n / kVector<T>, s.cols);
  } else {
    bias_activation_kernel<T, 1, A><<<blocks, kPointwiseThreads, 0, stream>>>(xt, bt, yt, n, s.cols);
  }
  check_launch("bias_activation_forward launch");
}

// ---- Activation backward ---------------------------------------------------------------------------------

template <class T, int V, Activation A>
__device__ __forceinline__ void activation_backward_step(const T* x, const T* dy, T* dx, int64_t i) {
  float z[V], g[V];
  load_vector<T, V>(x + i, z);
  load_vector<T, V>(dy + i, g);
#pragma unroll
  for (int k = 0; k < V; ++k) g[k] = __fmul_rn(g[k], derivative<A>(z[k]));
  store_vector<T, V>(dx + i, g);
}

template <class T, Activation A>
__global__ void __launch_bounds__(kPointwiseThreads)
    activation_backward_kernel(const T* __restrict__ x, const T* __restrict__ dy, T* __restrict__ dx, int64_t n) {
  constexpr int V = kVector<T>;
  const int64_t vectors = n / V;
  for (int64_t v = thread_index(); v < vectors; v += grid_stride()) activation_backward_step<T, V, A>(x, dy, dx, v * V);
  for (int64_t i = vectors * V + thread_index(); i < n; i += grid_stride()) {
    activation_backward_step<T, 1, A>(x, dy, dx, i);
  }
}

// ---- Dropout ------------------------------------------------------------------------------------------

struct DropoutArgs {
  float p = 0;
  float scale = 1;
  uint64_t seed = 0;
  uint32_t key = 0;
};

// V consecutive elements from index i (a multiple of 4 when V >= 4).
template <class T, int V>
__device__ __forceinline__ void dropout_step(const DropoutArgs a, const T* in, T* out, int64_t i) {
  float v[V];
  load_vector<T, V>(in + i, v);
  if constexpr (V >= 4) {
#pragma unroll
    for (int q = 0; q < V / 4; ++q) {
      const rng::Philox4x32Counter block =
          rng::draw_block(a.seed, a.key, rng::Stream::dropout, static_cast<uint64_t>(i / 4 + q));
#pragma unroll
      for (int w = 0; w < 4; ++w) {
        const bool keep = rng::uniform01(block.w[w]) >= a.p;
        v[4 * q + w] = keep ? __fmul_rn(v[4 * q + w], a.scale) : 0.0f;
      }
    }
  } else {
#pragma unroll
    for (int k = 0; k < V; ++k) {
      const bool keep =
          rng::uniform01(rng::bits_at(a.seed, a.key, rng::Stream::dropout, static_cast<uint64_t>(i + k))) >= a.p;
      v[k] = keep ? __fmul_rn(v[k], a.scale) : 0.0f;
    }
  }
  store_vector<T, V>(out + i, v);
}

template <class T>
__global__ void __launch_bounds__(kPointwiseThreads)
    dropout_kernel(const DropoutArgs a, const T* __restrict__ in, T* __restrict__ out, int64_t n) {
  constexpr int V = kVector<T>;
  const int64_t vectors = n / V;
  for (int64_t v = thread_index(); v < vectors; v += grid_stride()) dropout_step<T, V>(a, in, out, v * V);
  for (int64_t i = vectors * V + thread_index(); i < n; i += grid_stride()) dropout_step<T, 1>(a, in, out, i);
}

void require_pointers(const char* function, std::initializer_list<std::pair<const char*, const void*>> pointers) {
  for (const auto& [name, p] : pointers) require_aligned(function, name, p);
}

void require_dropout_p(const char* function, float p) {
  if (!(p >= 0.0f && p < 1.0f)) throw UsageError(std::string(function) + ": p is " + std::to_string(p) + ", must be in [0, 1)");
}

void launch_dropout(const char* function, float p, uint64_t seed, uint32_t key, int64_t n, DType storage,
                    const void* in, void* out, StreamHandle stream) {
  require_dropout_p(function, p);
  require_non_negative(function, "n", n);
  require_storage(function, storage);
  if (n > 0 && (in == nullptr || out == nullptr)) throw UsageError(std::string(function) + ": null input or output");
  require_pointers(function, {{"input", in}, {"output", out}});
  if (n == 0) return;
  // dropout_scale(p) of the reference: fp32(1 / (1 - p)) computed in double, here on the host.
  const DropoutArgs a{p, static_cast<float>(1.0 / (1.0 - static_cast<double>(p))), seed, key};
  dispatch_storage(storage, [&](auto tag) {
    using T = decltype(tag);
    const auto blocks = static_cast<unsigned>(launch::pointwise_blocks(n, kVector<T>));
    dropout_kernel<T><<<blocks, kPointwiseThreads, 0, static_cast<cudaStream_t>(stream)>>>(
        a, static_cast<const T*>(in), static_cast<T*>(out), n);
  });
  check_launch(function);
}

template <class F>
void dispatch_activation(Activation a, F&& f) {
  switch (a) {
    case Activation::relu:
      f(std::integral_constant<Activation, Activation::relu>{});
      return;
    case Activation::gelu_tanh:
      f(std::integral_constant<Activation, Activation::gelu_tanh>{});
      return;
    case Activation::silu:
      f(std::integral_constant<Activation, Activation::silu>{});
      return;
  }
  throw UsageError("nn: unknown activation " + std::to_string(static_cast<int>(a)));
}

}  // namespace
}  // namespace detail

void bias_activation_forward(Activation a, const PointwiseShape& shape, DType storage, const void* x,
                             const void* bias, void* y, StreamHandle stream) {
  constexpr const char* kName = "bias_activation_forward";
  detail::require_non_negative(kName, "rows", shape.rows);
  detail::require_non_negative(kName, "cols", shape.cols);
  detail::require_storage(kName, storage);
  if (shape.rows * shape.cols > 0 && (x == nullptr || y == nullptr)) throw UsageError("bias_activation_forward: null x or y");
  detail::require_pointers(kName, {{"x", x}, {"bias", bias}, {"y", y}});
  detail::dispatch_activation(a, [&](auto act) {
    detail::dispatch_storage(storage, [&](auto tag) {
      detail::launch_bias_activation<decltype(tag), decltype(act)::value>(shape, x, bias, y,
                                                                          static_cast<cudaStream_t>(stream));
    });
  });
}

void activation_backward(Activation a, int64_t n, DType storage, const void* x, const void* dy, void* dx,
                         StreamHandle stream) {
  constexpr const char* kName = "activation_backward";
  detail::require_non_negative(kName, "n", n);
  detail::require_storage(kName, storage);
  if (n > 0 && (x == nullptr || dy == nullptr || dx == nullptr)) throw UsageError("activation_backward: null x, dy or dx");
  detail::require_pointers(kName, {{"x", x}, {"dy", dy}, {"dx", dx}});
  if (n == 0) return;
  detail::dispatch_activation(a, [&](auto act) {
    detail::dispatch_storage(storage, [&](auto tag) {
      using T = decltype(tag);
      const auto blocks = static_cast<unsigned>(launch::pointwise_blocks(n, detail::kVector<T>));
      detail::activation_backward_kernel<T, decltype(act)::value>
          <<<blocks, launch::kPointwiseThreads, 0, static_cast<cudaStream_t>(stream)>>>(
              static_cast<const T*>(x), static_cast<const T*>(dy), static_cast<T*>(dx), n);
    });
  });
  detail::check_launch(kName);
}

void dropout_forward(float p, uint64_t seed, uint32_t key, int64_t n, DType storage, const void* x, void* y,
                     StreamHandle stream) {
  detail::launch_dropout("dropout_forward", p, seed, key, n, storage, x, y, stream);
}

void dropout_backward(float p, uint64_t seed, uint32_t key, int64_t n, DType storage, const void* dy, void* dx,
                      StreamHandle stream) {
  detail::launch_dropout("dropout_backward", p, seed, key, n, storage, dy, dx, stream);
}

}  // namespace gauge::optimized::nn
