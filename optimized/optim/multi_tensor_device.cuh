// Internal to optimized/optim: the device-side descriptors, per-step scalars, element loads and
// stores per precision, and the update kernel template shared by the per-algorithm translation units
// (update_sgd.cu, update_adagrad.cu, update_rmsprop.cu, update_adam.cu; one TU each so that a 2-core
// build compiles them in parallel). Nothing here is part of the API.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "harness/stream.h"
#include "optimized/optim/multi_tensor_plan.h"
#include "optimized/optim/step_scalars.h"
#include "optimized/precision/stochastic_rounding.cuh"
#include "reference/optim/config.h"

namespace gauge::optimized::optim::detail {

using gauge::optim::Precision;
namespace sr = gauge::optimized::precision;

// One tensor of a StepPlan, in the workspace. 72 bytes; read once per chunk (an L2 hit).
struct TensorDescriptor {
  void* param = nullptr;
  const void* grad = nullptr;
  float* master = nullptr;
  void* state[plan::kMaxStates] = {nullptr, nullptr, nullptr};
  int64_t size = 0;
  int64_t vector_start = -1;  // plan::tensor_vector_start over every array the step touches
  uint32_t index = 0;         // position in the list (stochastic-rounding tensor ids)
  uint32_t unused = 0;
};
static_assert(sizeof(TensorDescriptor) == plan::kStepDescriptorBytes);

using gauge::optimized::optim::StepScalars;  // optimized/optim/step_scalars.h

struct UpdateArgs {
  const TensorDescriptor* tensors = nullptr;
  const plan::Chunk* chunks = nullptr;
  int64_t chunk_count = 0;
  // Null when the step ran no norm pre-pass: gradient scale 1, never skipped, and block 0 writes
  // *status_out = 0 (when not null). Otherwise the pre-pass wrote status and norm.
  const plan::Control* control = nullptr;
  int* status_out = nullptr;
  uint64_t seed = 0;  // stochastic rounding
  uint64_t step = 0;
  StepScalars s;
  // step_counted() (update_kernel<Op, P, true>): the step number and the step-dependent scalars come
  // from here (the pre-pass wrote them for the applied step's t; `control` is then set too) instead
  // of from `step` and `s`. Null for step().
  const plan::CountedStep* counted = nullptr;
};

// ---- Element types per precision ------------------------------------------------------------------

template <Precision P>
struct Layout;
template <>
struct Layout<Precision::fp32> {
  using Param = float;
  using Grad = float;
  using State = float;
  static constexpr bool kMaster = false;
  static constexpr bool kStochastic = false;
  static constexpr int kWidth = plan::vector_width(4);
};
template <>
struct Layout<Precision::bf16_master> {
  using Param = uint16_t;
  using Grad = uint16_t;
  using State = float;
  static constexpr bool kMaster = true;
  static constexpr bool kStochastic = false;
  static constexpr int kWidth = plan::vector_width(2);
};
template <>
struct Layout<Precision::bf16_stochastic> {
  using Param = uint16_t;
  using Grad = uint16_t;
  using State = uint16_t;
  static constexpr bool kMaster = false;
  static constexpr bool kStochastic = true;
  static constexpr int kWidth = plan::vector_width(2);
};

// ---- N-element loads and stores: 16-byte accesses when N elements fill whole 16-byte words (the
// vector path; the caller guarantees alignment), one element at a time otherwise (N == 1) ----------

template <int N>
__device__ __forceinline__ void load(const float* p, float (&x)[N]) {
  if constexpr (N % 4 == 0) {
#pragma unroll
    for (int q = 0; q < N / 4; ++q) {
      const float4 v = reinterpret_cast<const float4*>(p)[q];
      x[4 * q + 0] = v.x;
      x[4 * q + 1] = v.y;
      x[4 * q + 2] = v.z;
      x[4 * q + 3] = v.w;
    }
  } else {
#pragma unroll
    for (int k = 0; k < N; ++k) x[k] = p[k];
  }
}

template <int N>
__device__ __forceinline__ void load(const uint16_t* p, float (&x)[N]) {
  if constexpr (N % 8 == 0) {
#pragma unroll
    for (int q = 0; q < N / 8; ++q) {
      const uint4 v = reinterpret_cast<const uint4*>(p)[q];
      const uint32_t words[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
      for (int w = 0; w < 4; ++w) {
        x[8 * q + 2 * w] = __uint_as_float(words[w] << 16);
        x[8 * q + 2 * w + 1] = __uint_as_float(words[w] & 0xFFFF0000u);
      }
    }
  } else {
#pragma unroll
    for (int k = 0; k < N; ++k) x[k] = sr::bf16_bits_to_f32(p[k]);
  }
}

template <int N>
__device__ __forceinline__ void store(float* p, const float (&x)[N]) {
  if constexpr (N % 4 == 0) {
#pragma unroll
    for (int q = 0; q < N / 4; ++q) {
      reinterpret_cast<float4*>(p)[q] = make_float4(x[4 * q], x[4 * q + 1], x[4 * q + 2], x[4 * q + 3]);
    }
  } else {
#pragma unroll
    for (int k = 0; k < N; ++k) p[k] = x[k];
  }
}

template <int N>
__device__ __forceinline__ void store(uint16_t* p, const uint16_t (&b)[N]) {
  if constexpr (N % 8 == 0) {
#pragma unroll
    for (int q = 0; q < N / 8; ++q) {
      uint32_t words[4];
#pragma unroll
      for (int w = 0; w < 4; ++w) {
        words[w] = static_cast<uint32_t>(b[8 * q + 2 * w]) | (static_cast<uint32_t>(b[8 * q + 2 * w + 1]) << 16);
      }
      reinterpret_cast<uint4*>(p)[q] = make_uint4(words[0], words[1], words[2], words[3]);
    }
  } else {
#pragma unroll
    for (int k = 0; k < N; ++k) p[k] = b[k];
  }
}

template <int N>
__device__ __forceinline__ void round_rne(const float (&x)[N], uint16_t (&b)[N]) {
#pragma unroll
  for (int k = 0; k < N; ++k) b[k] = sr::f32_to_bf16_rne(x[k]);
}

// Stochastic rounding of elements [index, index + N) of stored tensor `tensor_id`. When the first
// index is a multiple of 4 (the common case: 16-byte aligned allocations give vector_start 0), one
// Philox block serves four consecutive elements; otherwise each element draws its own block (the same
// words, 4x the work: only tensors placed off the 4-element grid pay it).
template <int N>
__device__ __forceinline__ void round_stochastic(const float (&x)[N], uint64_t seed, uint32_t tensor_id, uint64_t step,
                                                 uint64_t index, uint16_t (&b)[N]) {
  if constexpr (N % 4 == 0) {
    if ((index & 3u) == 0) {
#pragma unroll
      for (int q = 0; q < N / 4; ++q) {
        const rng::Philox4x32Counter block = sr::sr_block(seed, tensor_id, (index >> 2) + q, step);
#pragma unroll
        for (int w = 0; w < 4; ++w) b[4 * q + w] = sr::f32_to_bf16_stochastic(x[4 * q + w], block.w[w]);
      }
      return;
    }
  }
#pragma unroll
  for (int k = 0; k < N; ++k) {
    b[k] = sr::f32_to_bf16_stochastic(x[k], sr::sr_word(seed, tensor_id, index + k, step));
  }
}

// ---- One tensor's arrays as fp32 values, for one precision -----------------------------------------

template <Precision P>
class Io {
 public:
  using L = Layout<P>;
  static constexpr int kWidth = L::kWidth;

  __device__ __forceinline__ Io(const TensorDescriptor& d, uint64_t seed, uint64_t step)
      : param_(static_cast<typename L::Param*>(d.param)),
        grad_(static_cast<const typename L::Grad*>(d.grad)),
        master_(d.master),
        seed_(seed),
        step_(step),
        tensor_(d.index) {
#pragma unroll
    for (int k = 0; k < plan::kMaxStates; ++k) state_[k] = static_cast<typename L::State*>(d.state[k]);
  }

  // The value the update works on: the master in bf16_master, the param otherwise.
  template <int N>
  __device__ __forceinline__ void load_param(int64_t i, float (&x)[N]) const {
    if constexpr (L::kMaster) {
      load<N>(master_ + i, x);
    } else {
      load<N>(param_ + i, x);
    }
  }

  template <int N>
  __device__ __forceinline__ void store_param(int64_t i, const float (&x)[N]) const {
    if constexpr (std::is_same_v<typename L::Param, float>) {
      store<N>(param_ + i, x);
    } else {
      uint16_t b[N];
      if constexpr (L::kMaster) {
        store<N>(master_ + i, x);
        round_rne<N>(x, b);
      } else {
        round_stochastic<N>(x, seed_, gauge::optim::stochastic_rounding_tensor_id(tensor_, 0), step_,
                            static_cast<uint64_t>(i), b);
      }
      store<N>(param_ + i, b);
    }
  }

  template <int N>
  __device__ __forceinline__ void load_grad(int64_t i, float (&x)[N]) const {
    load<N>(grad_ + i, x);
  }

  template <int N>
  __device__ __forceinline__ void load_state(int k, int64_t i, float (&x)[N]) const {
    load<N>(state(k) + i, x);
  }

  template <int N>
  __device__ __forceinline__ void store_state(int k, int64_t i, const float (&x)[N]) const {
    if constexpr (std::is_same_v<typename L::State, float>) {
      store<N>(state(k) + i, x);
    } else {
      uint16_t b[N];
      round_stochastic<N>(x, seed_, gauge::optim::stochastic_rounding_tensor_id(tensor_, 1u + static_cast<uint32_t>(k)), step_,
                          static_cast<uint64_t>(i), b);
      store<N>(state(k) + i, b);
    }
  }

 private:
  // A select chain rather than state_[k]: a runtime index into a register array would put the array
  // in local memory (RMSprop's slots are runtime values).
  __device__ __forceinline__ typename L::State* state(int k) const {
    return k == 0 ? state_[0] : (k == 1 ? state_[1] : state_[2]);
  }

  typename L::Param* param_;
  const typename L::Grad* grad_;
  float* master_;
  typename L::State* state_[plan::kMaxStates];
  uint64_t seed_;
  uint64_t step_;
  uint32_t tensor_;
};

// torch.maximum: NaN if either is NaN.
__device__ __forceinline__ float nan_max(float a, float b) { return (isnan(a) || isnan(b)) ? a + b : fmaxf(a, b); }

// ---- The update kernel -----------------------------------------------------------------------------
// One block per chunk (in reverse order, plan::update_chunk_of_block). Each thread takes vector steps
// v = tid, tid + 256, ... of the chunk's body, then its share of the at most 2 x (width - 1) scalar
// edge elements (all of the chunk for tensors on the scalar path). Op::apply<N>(io, i, s, scale)
// updates elements [i, i + N).
//
// kCounted (step_counted): the step number and the step-dependent scalars come from the pre-pass's
// counted step in the workspace (20 bytes every thread reads from the same line) instead of the
// parameters. A template parameter rather than a runtime branch, so that the host step's kernels keep
// their code and registers exactly: values loaded from memory live in registers where the
// parameters' are constant-bank operands, and a shared kernel would carry the counted path's
// registers into the host step (measured: up to +8, and a spill in SGD's bf16 kernel on sm_80).

// Whether Op branches on StepScalars::first_step (it says so with kSwitchesOnFirstStep = true).
template <class Op>
constexpr bool switches_on_first_step() {
  if constexpr (requires { Op::kSwitchesOnFirstStep; }) {
    return Op::kSwitchesOnFirstStep;
  } else {
    return false;
  }
}

template <class Op, Precision P>
__device__ __forceinline__ void update_chunk(const UpdateArgs& a, const StepScalars& s, uint64_t step, float scale) {
  constexpr int kWidth = Io<P>::kWidth;
  const plan::Chunk chunk = a.chunks[plan::update_chunk_of_block(blockIdx.x, a.chunk_count)];
  const TensorDescriptor& d = a.tensors[chunk.tensor];
  const Io<P> io(d, a.seed, step);
  const plan::ChunkSplit split = plan::split_chunk(chunk.begin, chunk.count, d.vector_start, kWidth);
  for (int64_t v = threadIdx.x; v < split.vectors; v += plan::kThreadsPerBlock) {
    Op::template apply<kWidth>(io, split.vector_first(v), s, scale);
  }
  for (int64_t j = threadIdx.x; j < split.scalar_count(); j += plan::kThreadsPerBlock) {
    Op::template apply<1>(io, split.scalar_index(j), s, scale);
  }
}

template <class Op, Precision P, bool kCounted>
__global__ void __launch_bounds__(plan::kThreadsPerBlock) update_kernel(const UpdateArgs a) {
  float scale = 1.0f;
  if (a.control != nullptr) {
    if (a.control->skip != 0) return;
    scale = a.control->scale;
  } else if (blockIdx.x == 0 && threadIdx.x == 0 && a.status_out != nullptr) {
    *a.status_out = 0;
  }
  if (a.chunk_count == 0) return;
  if constexpr (kCounted) {
    const plan::CountedStep c = *a.counted;
    StepScalars s = a.s;
    s.clr = c.clr;
    s.step_size = c.step_size;
    s.bc2_sqrt = c.bc2_sqrt;
    const auto step = static_cast<uint64_t>(c.step);
    if constexpr (switches_on_first_step<Op>()) {
      // SGD: one loop per value of the loaded first_step, each with it as a constant (keeping it in
      // a register through the loop cost a spill on sm_80).
      if (c.first_step != 0) {
        s.first_step = 1;
        update_chunk<Op, P>(a, s, step, scale);
      } else {
        s.first_step = 0;
        update_chunk<Op, P>(a, s, step, scale);
      }
    } else {
      s.first_step = c.first_step;
      update_chunk<Op, P>(a, s, step, scale);
    }
  } else {
    update_chunk<Op, P>(a, a.s, a.step, scale);
  }
}

template <class Op, Precision P>
void launch_update_as(const UpdateArgs& args, StreamHandle stream) {
  const int blocks = plan::grid_blocks(args.chunk_count);
  if (args.counted != nullptr) {
    update_kernel<Op, P, true><<<blocks, plan::kThreadsPerBlock, 0, stream>>>(args);
  } else {
    update_kernel<Op, P, false><<<blocks, plan::kThreadsPerBlock, 0, stream>>>(args);
  }
}

template <class Op>
void launch_update_for(Precision precision, const UpdateArgs& args, StreamHandle stream) {
  switch (precision) {
    case Precision::fp32:
      launch_update_as<Op, Precision::fp32>(args, stream);
      return;
    case Precision::bf16_master:
      launch_update_as<Op, Precision::bf16_master>(args, stream);
      return;
    case Precision::bf16_stochastic:
      launch_update_as<Op, Precision::bf16_stochastic>(args, stream);
      return;
  }
}

// One per algorithm family (defined in update_<family>.cu). Launch errors are checked by the caller.
void launch_update_sgd(Precision precision, const UpdateArgs& args, StreamHandle stream);
void launch_update_adagrad(Precision precision, const UpdateArgs& args, StreamHandle stream);
void launch_update_rmsprop(Precision precision, const UpdateArgs& args, StreamHandle stream);
void launch_update_adam(Precision precision, const UpdateArgs& args, StreamHandle stream);  // Adam and AdamW

}  // namespace gauge::optimized::optim::detail
