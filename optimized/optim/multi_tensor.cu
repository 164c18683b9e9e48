// Fused multi-tensor optimizer steps: plan construction, the gradient-norm pre-pass, state
// initialization and gradient accumulation. The per-algorithm update kernels live in update_*.cu
// (one translation unit per algorithm family, built in parallel), on the template in
// multi_tensor_device.cuh; the launch arithmetic is in multi_tensor_plan.h (CPU-tested).
//
// ---- Napkin math ---------------------------------------------------------------------------------
// Every step is a stream over the parameter list with a few flops per byte, so the bound is HBM
// bandwidth. Bytes per parameter moved by the update kernel (reads + writes, each array once):
//
//   algorithm (states)          fp32        bf16_master (p,g bf16; master, states fp32)   bf16_stochastic
//   SGD, no momentum            12 (8+4)    12 (p-master 4 + g 2 | master 4 + p 2)        6
//   SGD, momentum               20 (12+8)   20                                           10
//   AdaGrad (sum)               20          20                                           10
//   RMSprop (sq [,buf][,ga])    20/28/36    20/28/36                                      10/14/18
//   Adam / AdamW (m, v)         28 (16+12)  28 (14+14)                                    14 (8+6)
//   Adam amsgrad (m, v, vmax)   36          36                                           18
//
// AdamW fp32 at 1e8 parameters: 2.8 GB per step. H100 SXM (HBM3, ~3.35 TB/s): 0.84 ms at peak; the
// target is >= 85% (<= 0.98 ms for the update kernel). The norm pre-pass (needed for clipping, for the
// NaN/Inf skip, which is on by default, or when the norm is asked for) reads every gradient once more:
// +4 B/param fp32 (AdamW 28 -> 32, +14%: ~0.96 ms at peak, ~1.12 ms at 85%), +2 B bf16
// (bf16_stochastic AdamW 14 -> 16); its partials and flags (8 B per 16 Ki-element chunk) and the
// final sum are noise. The update kernel walks the chunks in reverse, so the gradients the pre-pass
// read last (up to ~L2 size, 50 MB on H100) can be L2 hits: at 1e8 fp32 params that wins back up to
// ~1/8 of the pre-pass. Against "% of HBM peak", count the pre-pass bytes as moved (cost model bytes:
// update bytes + 4 or 2 B/param when the pre-pass runs). Launch overhead: 2 kernels per step (~2 x
// 3-5 us of launch latency, 0.5% at 1e8 params, dominant below ~1e6 params).
//
// Compute stays far from a limit: at ~120 G params/s (AdamW fp32 at peak bandwidth) the H100's
// ~29 T lane-instructions/s leave ~240 instructions per element; Adam uses ~30 (a sqrt and two IEEE
// divisions are the bulk). bf16_stochastic AdamW is the tightest: ~240 G params/s leaves ~120
// instructions, and stochastic rounding costs one Philox4x32-10 (~70 instructions) per 4 elements per
// bf16 array written (3 arrays: ~55 per element) when the tensor's vector start is a multiple of 4
// (always, for 16-byte aligned allocations), so it is still memory-bound, with little margin; other
// tensors draw one Philox block per element (4x the rounding work, same bits).
//
// Shape: one block of 256 threads per chunk of 16 Ki elements (multi_tensor_plan.h); each thread
// does vector steps of 4 (fp32) or 8 (bf16 modes) elements with 16-byte accesses (fp32 arrays of a
// bf16-mode step take two), all loads of a step before any store; the <= 2 x (width - 1) scalar
// edge elements of a chunk, or every element of a tensor whose arrays cannot be 16-byte aligned
// together, take one-element steps. Kernels are templated on algorithm family x precision (4 x 3
// update kernels; AdamW is Adam with a uniform switch); momentum, nesterov, centered, amsgrad,
// weight decay and the first SGD step are launch-uniform runtime switches.
//
// Counted steps (StepPlan::step_counted) always run the pre-pass (+4 B/param fp32, +2 bf16, as
// above, even where the host step would skip it); its last block's thread 0 also advances the device
// step counter and computes t's step-dependent scalars in double (one pow per bias correction: a
// few hundred instructions once per step), and the update reads those 20 bytes instead of its
// parameters'. Both kernels have a counted twin (a template flag), so the host step's kernels are
// unchanged; the counted pre-pass needs 40 registers for the pow path (32 without: 75% instead of
// 100% occupancy, still many times the bytes in flight a streaming read needs).
//
// Norm determinism: every chunk's sum of squares is computed by one block in a fixed order
// (per-thread sequential FMAs over a fixed element assignment, a fixed xor-shuffle tree, a fixed tree
// over the 8 warps), written to partials[chunk] with a NaN/Inf flag in flags[chunk]; the last block to
// finish (a __threadfence + atomicAdd counter, reset by that block) sums the partials in a fixed order
// (thread t takes t, t + 256, ..., then the same trees) and ORs the flags. Which block is last does
// not change the order, so the norm has the same bits every run for the same plan (and placement).
//
// Plan construction uploads the descriptors and chunk table through kernel parameters (see
// upload_kernel), so no step of a plan's life synchronizes the host with the stream.

#include <cuda_runtime.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "harness/error.h"
#include "optimized/optim/multi_tensor.h"
#include "optimized/optim/multi_tensor_device.cuh"
#include "optimized/optim/multi_tensor_plan.h"
#include "optimized/optim/step_scalars.h"

namespace gauge::optimized::optim {

using gauge::optim::Algorithm;
using gauge::optim::Hyper;
using gauge::optim::Precision;
using gauge::optim::StepOptions;

namespace detail {
namespace {

// ---- Norm pre-pass ---------------------------------------------------------------------------------

struct NormArgs {
  const TensorDescriptor* tensors = nullptr;
  const plan::Chunk* chunks = nullptr;
  int64_t chunk_count = 0;
  float* partials = nullptr;  // [chunk]: the chunk's sum of squares (NaN / Inf propagate)
  uint32_t* flags = nullptr;  // [chunk]: 1 when the chunk holds a NaN or +-Inf gradient
  plan::Control* control = nullptr;
  float max_norm = 0;
  int clip = 0;
  int allow_nonfinite = 0;
  int* status_out = nullptr;
  float* norm_out = nullptr;
  // step_counted() (norm_kernel<G, true>): the applied-step counter the last block advances, and where
  // it puts t's scalars.
  int64_t* step_counter = nullptr;
  plan::CountedStep* counted = nullptr;
  StepDependence dependence;
};

// The counted step's bookkeeping, by the last block's thread 0 once it knows the step is applied:
// t = applied steps + 1, counted in place, and t's step-dependent scalars in double (the host step's
// own function). A few hundred instructions of one thread per step.
__device__ __noinline__ void advance_step_counter(int64_t* step_counter, plan::CountedStep* counted,
                                                  const StepDependence dependence) {
  const int64_t t = *step_counter + 1;
  *step_counter = t;
  const StepDependentScalars d = step_dependent_scalars(dependence, t);
  plan::CountedStep c;
  c.step = static_cast<uint32_t>(t);  // t < 2^30: the caller's promise (StepPlan::step_counted)
  c.clr = d.clr;
  c.step_size = d.step_size;
  c.bc2_sqrt = d.bc2_sqrt;
  c.first_step = d.first_step;
  *counted = c;
}

// Sum over the block in a fixed order; the result is valid in warp 0. Callers separate two uses of
// `warp_sums` with a __syncthreads().
__device__ __forceinline__ float block_sum(float x, float* warp_sums) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) x += __shfl_xor_sync(0xFFFFFFFFu, x, offset);
  const int warp = static_cast<int>(threadIdx.x) / 32;
  const int lane = static_cast<int>(threadIdx.x) % 32;
  if (lane == 0) warp_sums[warp] = x;
  __syncthreads();
  float y = 0.0f;
  if (warp == 0) {
    y = lane < plan::kWarpsPerBlock ? warp_sums[lane] : 0.0f;
#pragma unroll
    for (int offset = plan::kWarpsPerBlock / 2; offset > 0; offset >>= 1) y += __shfl_xor_sync(0xFFFFFFFFu, y, offset);
  }
  return y;
}

template <int N, class G>
__device__ __forceinline__ void add_squares(const G* grad, int64_t i, float& sum, uint32_t& nonfinite) {
  float g[N];
  load<N>(grad + i, g);
#pragma unroll
  for (int k = 0; k < N; ++k) {
    sum = fmaf(g[k], g[k], sum);
    nonfinite |= fabsf(g[k]) <= FLT_MAX ? 0u : 1u;  // NaN compares false
  }
}

// One block per chunk (forward order); the last block to finish also does the final sum and writes
// the step's control block, status and norm, and (kCounted: step_counted) advances the step counter.
// kCounted is a template parameter so that the host step's pre-pass keeps its code and registers
// (the double pow of the counted bookkeeping needs more).
template <class G, bool kCounted>
__global__ void __launch_bounds__(plan::kThreadsPerBlock) norm_kernel(const NormArgs a) {
  constexpr int kWidth = plan::vector_width(sizeof(G));
  __shared__ float warp_sums[plan::kWarpsPerBlock];
  __shared__ int is_last;
  float sum = 0.0f;
  uint32_t nonfinite = 0;
  if (a.chunk_count > 0) {
    const plan::Chunk chunk = a.chunks[blockIdx.x];
    const TensorDescriptor& d = a.tensors[chunk.tensor];
    const G* grad = static_cast<const G*>(d.grad);
    const plan::ChunkSplit split = plan::split_chunk(chunk.begin, chunk.count, d.vector_start, kWidth);
    for (int64_t v = threadIdx.x; v < split.vectors; v += plan::kThreadsPerBlock) {
      add_squares<kWidth>(grad, split.vector_first(v), sum, nonfinite);
    }
    for (int64_t j = threadIdx.x; j < split.scalar_count(); j += plan::kThreadsPerBlock) {
      add_squares<1>(grad, split.scalar_index(j), sum, nonfinite);
    }
  }
  const int any_nonfinite = __syncthreads_or(static_cast<int>(nonfinite));
  const float chunk_sum = block_sum(sum, warp_sums);
  if (threadIdx.x == 0) {
    if (a.chunk_count > 0) {
      a.partials[blockIdx.x] = chunk_sum;
      a.flags[blockIdx.x] = any_nonfinite != 0 ? 1u : 0u;
    }
    __threadfence();  // the partial is visible device-wide before the counter says so
    const unsigned int done = atomicAdd(&a.control->blocks_done, 1u);
    is_last = done == gridDim.x - 1u ? 1 : 0;
  }
  __syncthreads();
  if (is_last == 0) return;
  __threadfence();
  float part = 0.0f;
  uint32_t flagged = 0;
  for (int64_t c = threadIdx.x; c < a.chunk_count; c += plan::kThreadsPerBlock) {
    part += __ldcg(a.partials + c);
    flagged |= __ldcg(a.flags + c);
  }
  const int any_flagged = __syncthreads_or(static_cast<int>(flagged));
  const float total = block_sum(part, warp_sums);
  if (threadIdx.x == 0) {
    // NaN when a gradient is NaN, +Inf when one is +-Inf (or the fp32 sum overflows), as PyTorch's norm.
    const float norm = sqrtf(total);
    float scale = 1.0f;
    if (a.clip != 0) {
      const float coef = a.max_norm / (norm + 1e-6f);
      if (!(coef >= 1.0f)) scale = coef;  // coef < 1, or NaN (propagated like torch.clamp)
    }
    const int skip = (any_flagged != 0 && a.allow_nonfinite == 0) ? 1 : 0;
    a.control->norm = norm;
    a.control->scale = scale;
    a.control->skip = skip;
    a.control->blocks_done = 0u;  // ready for the next step (stream-ordered)
    if (a.status_out != nullptr) *a.status_out = skip;
    if (a.norm_out != nullptr) *a.norm_out = norm;
    if constexpr (kCounted) {
      if (skip == 0) advance_step_counter(a.step_counter, a.counted, a.dependence);
    }
  }
}

// ---- State initialization --------------------------------------------------------------------------

struct InitArgs {
  const TensorDescriptor* tensors = nullptr;
  const plan::Chunk* chunks = nullptr;
  int state_count = 0;
  float first_state_value = 0;  // AdaGrad: initial_accumulator_value; 0 otherwise
};

template <Precision P>
__global__ void __launch_bounds__(plan::kThreadsPerBlock) init_kernel(const InitArgs a) {
  using L = Layout<P>;
  const plan::Chunk chunk = a.chunks[blockIdx.x];
  const TensorDescriptor& d = a.tensors[chunk.tensor];
  for (int64_t e = threadIdx.x; e < chunk.count; e += plan::kThreadsPerBlock) {
    const int64_t i = chunk.begin + e;
    if constexpr (L::kMaster) d.master[i] = sr::bf16_bits_to_f32(static_cast<const uint16_t*>(d.param)[i]);
    for (int k = 0; k < a.state_count; ++k) {
      const float value = k == 0 ? a.first_state_value : 0.0f;
      if constexpr (std::is_same_v<typename L::State, float>) {
        static_cast<float*>(d.state[k])[i] = value;
      } else {
        static_cast<uint16_t*>(d.state[k])[i] = sr::f32_to_bf16_rne(value);
      }
    }
  }
}

// ---- Gradient accumulation -------------------------------------------------------------------------

struct AccumulateDescriptor {
  float* acc = nullptr;
  void* out = nullptr;  // may equal acc (fp32)
  int64_t size = 0;
  int64_t vector_start = -1;
};
static_assert(sizeof(AccumulateDescriptor) == plan::kAccumulateDescriptorBytes);

struct AccumulateArgs {
  const AccumulateDescriptor* tensors = nullptr;
  const void* const* grads = nullptr;  // this micro-batch's row of the [k][tensor] table
  const plan::Chunk* chunks = nullptr;
  int first = 0;
  int last = 0;
  int bf16_out = 0;
  float inv_k = 1;  // accumulation_scale(k)
};

template <int N, class G>
__device__ __forceinline__ void accumulate_elements(const AccumulateArgs& a, const AccumulateDescriptor& d, const G* grad,
                                                    int64_t i) {
  float x[N];
  load<N>(grad + i, x);
  if (a.first == 0) {
    float acc[N];
    load<N>(d.acc + i, acc);
#pragma unroll
    for (int k = 0; k < N; ++k) x[k] = __fadd_rn(acc[k], x[k]);
  }
  if (a.last == 0) {
    store<N>(d.acc + i, x);
    return;
  }
#pragma unroll
  for (int k = 0; k < N; ++k) x[k] = __fmul_rn(x[k], a.inv_k);
  if (a.bf16_out != 0) {
    uint16_t b[N];
    round_rne<N>(x, b);
    store<N>(static_cast<uint16_t*>(d.out) + i, b);
  } else {
    store<N>(static_cast<float*>(d.out) + i, x);
  }
}

// The vector width follows the narrowest array: 8 when the micro-batch gradients or the output are
// bf16 (the accumulator then takes two 16-byte accesses per step), else 4.
template <class G, int kWidth>
__global__ void __launch_bounds__(plan::kThreadsPerBlock) accumulate_kernel(const AccumulateArgs a) {
  const plan::Chunk chunk = a.chunks[blockIdx.x];
  const AccumulateDescriptor& d = a.tensors[chunk.tensor];
  const G* grad = static_cast<const G*>(a.grads[chunk.tensor]);
  const plan::ChunkSplit split = plan::split_chunk(chunk.begin, chunk.count, d.vector_start, kWidth);
  for (int64_t v = threadIdx.x; v < split.vectors; v += plan::kThreadsPerBlock) {
    accumulate_elements<kWidth>(a, d, grad, split.vector_first(v));
  }
  for (int64_t j = threadIdx.x; j < split.scalar_count(); j += plan::kThreadsPerBlock) {
    accumulate_elements<1>(a, d, grad, split.scalar_index(j));
  }
}

// ---- Plan upload through kernel parameters ----------------------------------------------------------
// A plan's descriptors and chunk table reach the device as __grid_constant__ kernel parameters (up to
// 32,000 bytes a launch: CUDA 12.1+ allows 32,764 bytes of parameters on sm_70+), not through
// cudaMemcpyAsync from pageable memory, which may synchronize with the stream. So building a plan is
// fully asynchronous and stream-ordered, like a step: a few tiny launches (one per 32 KB of table;
// ~121 KB for a 1e8-parameter, 200-tensor list).

inline constexpr size_t kUploadBlobBytes = 32000;
struct UploadBlob {
  uint4 words[kUploadBlobBytes / 16];
};

__global__ void __launch_bounds__(plan::kThreadsPerBlock)
    upload_kernel(const __grid_constant__ UploadBlob blob, uint4* __restrict__ destination, uint32_t words) {
  for (uint32_t w = threadIdx.x; w < words; w += plan::kThreadsPerBlock) destination[w] = blob.words[w];
}

// ---- Host helpers -------------------------------------------------------------------------------------

[[noreturn]] void usage(const std::string& what) { throw UsageError(what); }

void check(cudaError_t status, const char* what) {
  if (status != cudaSuccess) throw RuntimeFailure(std::string(what) + ": " + cudaGetErrorString(status));
}

void check_launch(const char* what) { check(cudaGetLastError(), what); }

int element_bytes_of(bool bf16) { return bf16 ? 2 : 4; }

// Null only for empty tensors; aligned to the element always.
plan::ArrayRef array_ref(const void* p, int element_bytes, int64_t size, const std::string& name) {
  const plan::ArrayRef ref{reinterpret_cast<uintptr_t>(p), element_bytes};
  if (size > 0 && p == nullptr) usage(name + " is null");
  if (!plan::naturally_aligned(ref)) usage(name + " is not aligned to its " + std::to_string(element_bytes) + "-byte element");
  return ref;
}

std::string entry(const char* what, size_t i) { return std::string(what) + "[" + std::to_string(i) + "]"; }
std::string entry(const char* what, size_t k, size_t i) {
  return std::string(what) + "[" + std::to_string(k) + "][" + std::to_string(i) + "]";
}

void* allocate_checked(const Allocator& allocate, size_t bytes, const char* who) {
  if (!allocate) usage(std::string(who) + ": no allocator");
  void* p = allocate(bytes);
  if (p == nullptr) throw RuntimeFailure(std::string(who) + ": the allocator returned null for " + std::to_string(bytes) + " bytes");
  if (reinterpret_cast<uintptr_t>(p) % plan::kWorkspaceAlignment != 0) {
    // Pool allocations are 256-byte aligned; the sub-buffers need 16 (Chunk, descriptors).
    if (reinterpret_cast<uintptr_t>(p) % 16 != 0) throw RuntimeFailure(std::string(who) + ": workspace not 16-byte aligned");
  }
  return p;
}

template <class T>
void put(std::vector<unsigned char>& image, size_t offset, const T* items, size_t count) {
  if (count > 0) std::memcpy(image.data() + offset, items, count * sizeof(T));
}

// Copies `image` (a multiple of 16 bytes) to `destination` (16-byte aligned) on `stream`.
void upload(void* destination, const std::vector<unsigned char>& image, StreamHandle stream, const char* what) {
  if (image.size() % 16 != 0 || reinterpret_cast<uintptr_t>(destination) % 16 != 0) {
    throw RuntimeFailure(std::string(what) + ": plan image not in 16-byte words");
  }
  const auto blob = std::make_unique<UploadBlob>();
  for (size_t offset = 0; offset < image.size(); offset += kUploadBlobBytes) {
    const size_t bytes = std::min(kUploadBlobBytes, image.size() - offset);
    std::memcpy(blob->words, image.data() + offset, bytes);
    upload_kernel<<<1, plan::kThreadsPerBlock, 0, stream>>>(
        *blob, reinterpret_cast<uint4*>(static_cast<unsigned char*>(destination) + offset), static_cast<uint32_t>(bytes / 16));
    check_launch(what);
  }
}

}  // namespace
}  // namespace detail

using detail::TensorDescriptor;

// ---- StepPlan --------------------------------------------------------------------------------------

StepPlan::StepPlan(const TensorList& list, Precision precision, const Hyper& hyper, const Allocator& allocate,
                   StreamHandle stream)
    : precision_(precision), hyper_(hyper) {
  gauge::optim::validate(hyper);  // UsageError naming the bad hyper-parameter
  const size_t n = list.sizes.size();
  const auto count_must_be = [&](size_t got, size_t want, const char* what) {
    if (got != want) {
      detail::usage(std::string("StepPlan: ") + what + " has " + std::to_string(got) + " entries, expected " +
                    std::to_string(want));
    }
  };
  count_must_be(list.params.size(), n, "params");
  count_must_be(list.grads.size(), n, "grads");
  const bool master = precision == Precision::bf16_master;
  count_must_be(list.master.size(), master ? n : 0, "master");
  const StateIndex slots = state_index(hyper);
  // An empty list may leave `states` empty too (TensorList{} is a valid, do-nothing plan).
  if (!(n == 0 && list.states.empty())) count_must_be(list.states.size(), static_cast<size_t>(slots.count), "states");
  for (size_t k = 0; k < list.states.size(); ++k) count_must_be(list.states[k].size(), n, "a states row");

  const bool bf16_params = precision != Precision::fp32;
  const bool bf16_states = precision == Precision::bf16_stochastic;
  // Stochastic rounding keys: tensor ids 4 i + slot within 32 bits, element indices below 2^34.
  if (n > UINT32_MAX / gauge::optim::kStochasticRoundingSlots) {
    detail::usage("StepPlan: " + std::to_string(n) + " tensors are too many to key stochastic rounding");
  }
  std::vector<TensorDescriptor> descriptors(n);
  std::vector<int64_t> vector_starts(n);
  for (size_t i = 0; i < n; ++i) {
    const int64_t size = list.sizes[i];
    if (size < 0) detail::usage("StepPlan: " + detail::entry("sizes", i) + " is negative");
    if (bf16_states && size > (int64_t{1} << 34)) {
      detail::usage("StepPlan: " + detail::entry("sizes", i) + " exceeds 2^34 elements (stochastic rounding keys)");
    }
    std::vector<plan::ArrayRef> arrays;
    arrays.push_back(detail::array_ref(list.params[i], detail::element_bytes_of(bf16_params), size,
                                       "StepPlan: " + detail::entry("params", i)));
    arrays.push_back(detail::array_ref(list.grads[i], detail::element_bytes_of(bf16_params), size,
                                       "StepPlan: " + detail::entry("grads", i)));
    if (master) arrays.push_back(detail::array_ref(list.master[i], 4, size, "StepPlan: " + detail::entry("master", i)));
    for (size_t k = 0; k < list.states.size(); ++k) {
      arrays.push_back(detail::array_ref(list.states[k][i], detail::element_bytes_of(bf16_states), size,
                                         "StepPlan: " + detail::entry("states", k, i)));
    }
    TensorDescriptor& d = descriptors[i];
    d.param = list.params[i];
    d.grad = list.grads[i];
    d.master = master ? list.master[i] : nullptr;
    for (size_t k = 0; k < list.states.size(); ++k) d.state[k] = list.states[k][i];
    d.size = size;
    d.vector_start = plan::tensor_vector_start(size, arrays);
    d.index = static_cast<uint32_t>(i);
    vector_starts[i] = d.vector_start;
    if (size > 0 && d.vector_start < 0) ++scalar_tensor_count_;
  }
  const std::vector<plan::Chunk> chunks = plan::build_chunk_table(list.sizes, vector_starts);
  tensor_count_ = static_cast<int64_t>(n);
  chunk_count_ = static_cast<int64_t>(chunks.size());

  const plan::WorkspaceLayout w = plan::workspace_layout(tensor_count_, chunk_count_, sizeof(TensorDescriptor));
  workspace_bytes_ = w.total;
  workspace_ = detail::allocate_checked(allocate, w.total, "StepPlan");
  // The control block, descriptors and chunk table in one host image, one copy; partials need no
  // initial value.
  std::vector<unsigned char> image(w.partials, 0);
  const plan::Control control{};
  detail::put(image, w.control, &control, 1);
  const plan::CountedStep counted_step{};
  detail::put(image, w.counted, &counted_step, 1);
  detail::put(image, w.descriptors, descriptors.data(), descriptors.size());
  detail::put(image, w.chunks, chunks.data(), chunks.size());
  detail::upload(workspace_, image, stream, "StepPlan: uploading the chunk table");
}

size_t StepPlan::workspace_bytes_bound(std::span<const int64_t> sizes) { return plan::step_workspace_bound(sizes); }

void StepPlan::step(int64_t step, double lr, const StepOptions& options, int* status_device, float* norm_device,
                    StreamHandle stream) const {
  if (step < 1 || step >= (int64_t{1} << 30)) {  // 2^30: the stochastic-rounding counter's limit
    detail::usage("StepPlan::step: step " + std::to_string(step) + " is outside [1, 2^30)");
  }
  enqueue_step(step, nullptr, lr, options, status_device, norm_device, stream);
}

void StepPlan::step_counted(int64_t* step_counter_device, double lr, const StepOptions& options, int* status_device,
                            float* norm_device, StreamHandle stream) const {
  if (step_counter_device == nullptr) detail::usage("StepPlan::step_counted: the step counter is null");
  if (reinterpret_cast<uintptr_t>(step_counter_device) % alignof(int64_t) != 0) {
    detail::usage("StepPlan::step_counted: the step counter is not 8-byte aligned");
  }
  enqueue_step(0, step_counter_device, lr, options, status_device, norm_device, stream);
}

void StepPlan::enqueue_step(int64_t host_step, int64_t* step_counter_device, double lr, const StepOptions& options,
                            int* status_device, float* norm_device, StreamHandle stream) const {
  const char* const who = step_counter_device != nullptr ? "StepPlan::step_counted" : "StepPlan::step";
  if (!std::isfinite(lr) || lr < 0.0) detail::usage(std::string(who) + ": lr " + std::to_string(lr) + " is negative or not finite");
  if (!std::isfinite(options.max_grad_norm) || options.max_grad_norm < 0.0) {
    detail::usage(std::string(who) + ": max_grad_norm " + std::to_string(options.max_grad_norm) + " is negative or not finite");
  }
  const bool counted = step_counter_device != nullptr;
  const plan::WorkspaceLayout w = plan::workspace_layout(tensor_count_, chunk_count_, sizeof(TensorDescriptor));
  auto* base = static_cast<unsigned char*>(workspace_);
  const auto* tensors = reinterpret_cast<const TensorDescriptor*>(base + w.descriptors);
  const auto* chunks = reinterpret_cast<const plan::Chunk*>(base + w.chunks);
  auto* control = reinterpret_cast<plan::Control*>(base + w.control);
  auto* counted_step = reinterpret_cast<plan::CountedStep*>(base + w.counted);
  const int blocks = plan::grid_blocks(chunk_count_);

  // The counted step's counter lives in the pre-pass's last block, so that pass always runs then.
  const bool norm_pass = counted || needs_norm_pass(options, norm_device);
  if (norm_pass) {
    detail::NormArgs n;
    n.tensors = tensors;
    n.chunks = chunks;
    n.chunk_count = chunk_count_;
    n.partials = reinterpret_cast<float*>(base + w.partials);
    n.flags = reinterpret_cast<uint32_t*>(base + w.flags);
    n.control = control;
    n.max_norm = static_cast<float>(options.max_grad_norm);
    n.clip = options.max_grad_norm > 0.0 ? 1 : 0;
    n.allow_nonfinite = options.allow_nonfinite ? 1 : 0;
    n.status_out = status_device;
    n.norm_out = norm_device;
    if (counted) {
      n.step_counter = step_counter_device;
      n.counted = counted_step;
      n.dependence = step_dependence(hyper_, lr);
    }
    const bool f32 = precision_ == Precision::fp32;
    if (counted) {
      if (f32) {
        detail::norm_kernel<float, true><<<blocks, plan::kThreadsPerBlock, 0, stream>>>(n);
      } else {
        detail::norm_kernel<uint16_t, true><<<blocks, plan::kThreadsPerBlock, 0, stream>>>(n);
      }
    } else {
      if (f32) {
        detail::norm_kernel<float, false><<<blocks, plan::kThreadsPerBlock, 0, stream>>>(n);
      } else {
        detail::norm_kernel<uint16_t, false><<<blocks, plan::kThreadsPerBlock, 0, stream>>>(n);
      }
    }
    detail::check_launch(counted ? "StepPlan::step_counted: norm pre-pass" : "StepPlan::step: norm pre-pass");
  }

  detail::UpdateArgs u;
  u.tensors = tensors;
  u.chunks = chunks;
  u.chunk_count = chunk_count_;
  u.control = norm_pass ? control : nullptr;
  u.status_out = norm_pass ? nullptr : status_device;
  u.seed = options.seed;
  // Counted: the step-independent scalars from here (any t gives the same ones), the rest from the
  // pre-pass's counted step.
  u.step = counted ? 0 : static_cast<uint64_t>(host_step);
  u.s = step_scalars(hyper_, counted ? 1 : host_step, lr);
  u.counted = counted ? counted_step : nullptr;
  switch (hyper_.algorithm) {
    case Algorithm::sgd:
      detail::launch_update_sgd(precision_, u, stream);
      break;
    case Algorithm::adagrad:
      detail::launch_update_adagrad(precision_, u, stream);
      break;
    case Algorithm::rmsprop:
      detail::launch_update_rmsprop(precision_, u, stream);
      break;
    case Algorithm::adam:
    case Algorithm::adamw:
      detail::launch_update_adam(precision_, u, stream);
      break;
  }
  detail::check_launch(counted ? "StepPlan::step_counted: update" : "StepPlan::step: update");
}

void StepPlan::initialize_state(StreamHandle stream) const {
  if (chunk_count_ == 0) return;
  const plan::WorkspaceLayout w = plan::workspace_layout(tensor_count_, chunk_count_, sizeof(TensorDescriptor));
  auto* base = static_cast<unsigned char*>(workspace_);
  detail::InitArgs a;
  a.tensors = reinterpret_cast<const TensorDescriptor*>(base + w.descriptors);
  a.chunks = reinterpret_cast<const plan::Chunk*>(base + w.chunks);
  a.state_count = state_index(hyper_).count;
  a.first_state_value = hyper_.algorithm == Algorithm::adagrad ? static_cast<float>(hyper_.initial_accumulator_value) : 0.0f;
  const int blocks = plan::grid_blocks(chunk_count_);
  switch (precision_) {
    case Precision::fp32:
      detail::init_kernel<Precision::fp32><<<blocks, plan::kThreadsPerBlock, 0, stream>>>(a);
      break;
    case Precision::bf16_master:
      detail::init_kernel<Precision::bf16_master><<<blocks, plan::kThreadsPerBlock, 0, stream>>>(a);
      break;
    case Precision::bf16_stochastic:
      detail::init_kernel<Precision::bf16_stochastic><<<blocks, plan::kThreadsPerBlock, 0, stream>>>(a);
      break;
  }
  detail::check_launch("StepPlan::initialize_state");
}

// ---- AccumulatePlan --------------------------------------------------------------------------------

AccumulatePlan::AccumulatePlan(const AccumulateList& list, GradFormat micro, GradFormat output, const Allocator& allocate,
                               StreamHandle stream)
    : micro_(micro), output_(output) {
  const size_t n = list.sizes.size();
  const size_t k = list.micro_grads.size();
  if (k == 0) detail::usage("AccumulatePlan: no micro-batches");
  if (k > (size_t{1} << 24)) detail::usage("AccumulatePlan: more than 2^24 micro-batches");  // k exact in fp32
  const auto count_must_be = [&](size_t got, size_t want, const std::string& what) {
    if (got != want) {
      detail::usage("AccumulatePlan: " + what + " has " + std::to_string(got) + " entries, expected " + std::to_string(want));
    }
  };
  count_must_be(list.accumulators.size(), n, "accumulators");
  count_must_be(list.outputs.size(), n, "outputs");
  for (size_t j = 0; j < k; ++j) count_must_be(list.micro_grads[j].size(), n, detail::entry("micro_grads", j));

  const bool uses_accumulator = k > 1;
  const int grad_bytes = detail::element_bytes_of(micro == GradFormat::bf16);
  const int out_bytes = detail::element_bytes_of(output == GradFormat::bf16);
  std::vector<detail::AccumulateDescriptor> descriptors(n);
  std::vector<int64_t> vector_starts(n);
  std::vector<const void*> grad_table(k * n);
  for (size_t i = 0; i < n; ++i) {
    const int64_t size = list.sizes[i];
    if (size < 0) detail::usage("AccumulatePlan: " + detail::entry("sizes", i) + " is negative");
    std::vector<plan::ArrayRef> arrays;
    if (uses_accumulator) {
      arrays.push_back(detail::array_ref(list.accumulators[i], 4, size, "AccumulatePlan: " + detail::entry("accumulators", i)));
      if (output == GradFormat::bf16 && size > 0 &&
          static_cast<const void*>(list.outputs[i]) == static_cast<const void*>(list.accumulators[i])) {
        detail::usage("AccumulatePlan: " + detail::entry("outputs", i) + " is the fp32 accumulator but the output is bf16");
      }
    }
    arrays.push_back(detail::array_ref(list.outputs[i], out_bytes, size, "AccumulatePlan: " + detail::entry("outputs", i)));
    for (size_t j = 0; j < k; ++j) {
      arrays.push_back(detail::array_ref(list.micro_grads[j][i], grad_bytes, size,
                                         "AccumulatePlan: " + detail::entry("micro_grads", j, i)));
      grad_table[j * n + i] = list.micro_grads[j][i];
    }
    descriptors[i] = detail::AccumulateDescriptor{uses_accumulator ? list.accumulators[i] : nullptr, list.outputs[i], size,
                                                  plan::tensor_vector_start(size, arrays)};
    vector_starts[i] = descriptors[i].vector_start;
    if (size > 0 && vector_starts[i] < 0) ++scalar_tensor_count_;
  }
  const std::vector<plan::Chunk> chunks = plan::build_chunk_table(list.sizes, vector_starts);
  micro_batches_ = static_cast<int>(k);
  tensor_count_ = static_cast<int64_t>(n);
  chunk_count_ = static_cast<int64_t>(chunks.size());

  const plan::AccumulateLayout w = plan::accumulate_layout(tensor_count_, micro_batches_, chunk_count_);
  workspace_bytes_ = w.total;
  if (workspace_bytes_ == 0) return;  // no tensors: nothing to do, ever
  workspace_ = detail::allocate_checked(allocate, workspace_bytes_, "AccumulatePlan");
  std::vector<unsigned char> image(workspace_bytes_, 0);
  detail::put(image, w.descriptors, descriptors.data(), descriptors.size());
  detail::put(image, w.grad_table, grad_table.data(), grad_table.size());
  detail::put(image, w.chunks, chunks.data(), chunks.size());
  detail::upload(workspace_, image, stream, "AccumulatePlan: uploading the chunk table");
}

void AccumulatePlan::accumulate(int micro, StreamHandle stream) const {
  if (micro < 0 || micro >= micro_batches_) {
    detail::usage("AccumulatePlan::accumulate: micro-batch " + std::to_string(micro) + " outside [0, " +
                  std::to_string(micro_batches_) + ")");
  }
  if (chunk_count_ == 0) return;
  const plan::AccumulateLayout w = plan::accumulate_layout(tensor_count_, micro_batches_, chunk_count_);
  auto* base = static_cast<unsigned char*>(workspace_);
  detail::AccumulateArgs a;
  a.tensors = reinterpret_cast<const detail::AccumulateDescriptor*>(base + w.descriptors);
  a.grads = reinterpret_cast<const void* const*>(base + w.grad_table) + static_cast<size_t>(micro) * static_cast<size_t>(tensor_count_);
  a.chunks = reinterpret_cast<const plan::Chunk*>(base + w.chunks);
  a.first = micro == 0 ? 1 : 0;
  a.last = micro == micro_batches_ - 1 ? 1 : 0;
  a.bf16_out = output_ == GradFormat::bf16 ? 1 : 0;
  a.inv_k = accumulation_scale(micro_batches_);
  const int blocks = plan::grid_blocks(chunk_count_);
  constexpr int kThreads = plan::kThreadsPerBlock;
  if (micro_ == GradFormat::bf16) {
    detail::accumulate_kernel<uint16_t, plan::vector_width(2)><<<blocks, kThreads, 0, stream>>>(a);
  } else if (output_ == GradFormat::bf16) {
    detail::accumulate_kernel<float, plan::vector_width(2)><<<blocks, kThreads, 0, stream>>>(a);
  } else {
    detail::accumulate_kernel<float, plan::vector_width(4)><<<blocks, kThreads, 0, stream>>>(a);
  }
  detail::check_launch("AccumulatePlan::accumulate");
}

}  // namespace gauge::optimized::optim
