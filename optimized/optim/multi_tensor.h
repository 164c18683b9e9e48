// Fused multi-tensor optimizer steps on the GPU: one launch updates every tensor of a parameter list,
// whatever their sizes (a chunk table in device memory maps blocks to (tensor, range) pairs), with
// 16-byte vector accesses and fp32 math in registers. The global gradient norm (for clipping) and the
// NaN/Inf check come from one deterministic two-stage reduction whose result stays on the device, so
// a step needs no host synchronization. Napkin math and kernel shapes: optimized/optim/multi_tensor.cu.
//
// Semantics are PyTorch torch.optim's (the reference, reference/optim, writes them out):
//   SGD      g += wd p; buf = g (step 1) else momentum buf + (1 - dampening) g;
//            g = nesterov ? g + momentum buf : buf (only with momentum > 0); p -= lr g
//   AdaGrad  clr = lr / (1 + (t - 1) lr_decay); g += wd p; sum += g^2; p -= clr g / (sqrt(sum) + eps)
//   RMSprop  g += wd p; sq = alpha sq + (1 - alpha) g^2; centered: ga = alpha ga + (1 - alpha) g,
//            avg = sqrt(sq - ga^2) + eps, else avg = sqrt(sq) + eps;
//            momentum > 0: buf = momentum buf + g / avg, p -= lr buf; else p -= lr g / avg
//   Adam     g += wd p; m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2; (amsgrad: vmax = max(vmax, v),
//            NaN-propagating like torch.maximum and the reference's nan_propagating_max), used
//            instead of v);
//            p -= (lr / (1 - b1^t)) m / (sqrt(v) / sqrt(1 - b2^t) + eps)
//   AdamW    as Adam without the L2 term, p *= 1 - lr wd first
// Weight-decay terms are skipped entirely when wd == 0 (as PyTorch does: 0 * Inf would be NaN).
// Per-step scalars (1 - b^t, sqrt, lr / bc1, clr, 1 - lr wd) are computed in double on the host and
// rounded once to fp32 (step_counted: the step-dependent ones in double on the device, by the same
// function, optimized/optim/step_scalars.h); element math is fp32 (FMA contraction allowed), sqrt
// and division IEEE.
//
// Precisions (gauge::optim::Precision):
//   fp32             params, grads, states float.
//   bf16_master      params and grads bf16 (uint16_t bits), fp32 master weights and fp32 states; the
//                    update runs on the master, then param = round-to-nearest-even bf16 of the master
//                    (NaN -> bits >> 16 | 0x0040, as reference/precision/casts.h).
//   bf16_stochastic  params, grads and states bf16; every bf16 write of a step (param and each state)
//                    is rounded once, stochastically (optimized/precision/stochastic_rounding.cuh),
//                    from the fp32 value computed in registers: intermediate values are never rounded.
//
// Gradient clipping and NaN/Inf (StepOptions): the step first reduces sum(g^2) over all tensors in
// fp32 when max_grad_norm > 0, or !allow_nonfinite, or norm_device is wanted: per chunk in a fixed
// order (FMA accumulation, fixed trees), then a fixed-order sum of the chunk partials, so the norm has
// the same bits every run for the same plan (not the bits of a sequential sum: compare it with a
// tolerance). The same pass flags NaN/+-Inf gradient elements: when one exists the step is skipped
// (no byte of params, master or states is written) and *status_device = 1, unless allow_nonfinite,
// in which case it runs and non-finite values propagate (norm NaN if a gradient is NaN, +Inf if one
// is +-Inf). A finite sum that overflows fp32 gives norm = +Inf and is not a skip. Clipping
// (max_grad_norm > 0): coef = max_norm / (norm + 1e-6) in fp32; every gradient is multiplied by coef
// when coef < 1 or coef is NaN (torch.clamp(coef, max=1) propagates NaN), before the weight-decay
// term, as clip_grad_norm_ followed by optimizer.step(); the gradient buffers are never written.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "harness/stream.h"
#include "reference/optim/config.h"

namespace gauge::optimized::optim {

// Device memory for a plan's workspace (chunk table, descriptors, partial sums, control block). In
// gauge: [&](size_t bytes) { return session.workspace(bytes); }. Never called with 0 bytes. The
// memory must stay valid, and be used by nothing else, for as long as the plan is used.
using Allocator = std::function<void*(size_t bytes)>;

// ---- State order ----------------------------------------------------------------------------------
// states[k][i] is state k of tensor i, in PyTorch's state-dict order:
//   SGD      [momentum_buffer]                              (none when momentum == 0)
//   AdaGrad  [sum]
//   RMSprop  [square_avg, (momentum_buffer), (grad_avg)]    (buffer when momentum > 0; grad_avg when centered)
//   Adam(W)  [exp_avg, exp_avg_sq, (max_exp_avg_sq)]        (max when amsgrad)
// This is gauge::optim::state_names(hyper) order (reference/optim/config.h); state_index gives each
// state's slot. States are caller-initialized before step 1 as PyTorch does (zeros; AdaGrad's sum =
// initial_accumulator_value): initialize_state() below does exactly that. SGD's momentum buffer is not
// read at step 1 (it is set to the gradient), so it may hold anything then.
struct StateIndex {
  int momentum_buffer = -1;  // SGD, RMSprop
  int sum = -1;              // AdaGrad
  int square_avg = -1;       // RMSprop
  int grad_avg = -1;         // RMSprop centered
  int exp_avg = -1;          // Adam, AdamW
  int exp_avg_sq = -1;
  int max_exp_avg_sq = -1;   // amsgrad
  int count = 0;             // = gauge::optim::state_count(hyper)
};
inline StateIndex state_index(const gauge::optim::Hyper& h) {
  using gauge::optim::Algorithm;
  StateIndex s;
  int next = 0;
  switch (h.algorithm) {
    case Algorithm::sgd:
      if (h.momentum != 0.0) s.momentum_buffer = next++;
      break;
    case Algorithm::adagrad:
      s.sum = next++;
      break;
    case Algorithm::rmsprop:
      s.square_avg = next++;
      if (h.momentum > 0.0) s.momentum_buffer = next++;
      if (h.centered) s.grad_avg = next++;
      break;
    case Algorithm::adam:
    case Algorithm::adamw:
      s.exp_avg = next++;
      s.exp_avg_sq = next++;
      if (h.amsgrad) s.max_exp_avg_sq = next++;
      break;
  }
  s.count = next;
  return s;
}

// ---- Tensor lists ---------------------------------------------------------------------------------
// Device pointers, one entry per tensor. Element types follow the precision: fp32 -> float
// everywhere; bf16_master -> params/grads bf16 (uint16_t bits), master and states float;
// bf16_stochastic -> params, grads and states bf16. Every pointer must be aligned to its element (any
// offset beyond that is fine: tensors whose arrays can be 16-byte aligned together take the vector
// path, others the scalar path). Arrays must not overlap each other. A tensor of size 0 may have
// null pointers.
struct TensorList {
  std::vector<void*> params;
  std::vector<const void*> grads;
  std::vector<float*> master;             // bf16_master only (else empty)
  std::vector<std::vector<void*>> states;  // [state_index(hyper).count][tensor]
  std::vector<int64_t> sizes;
};

// ---- One optimizer over one tensor list -----------------------------------------------------------
// Building a plan validates the hyper-parameters (gauge::optim::validate) and the list (throws
// gauge::UsageError naming the bad entry: counts, a null or misaligned pointer), takes one
// allocation from the allocator and enqueues the upload of the descriptors and chunk table on
// `stream` as kernel launches (their parameters carry the bytes), so it never synchronizes: it may be
// built inside a timed region, and it is ordered before later work on `stream`. Building it once and
// reusing it for every step is cheapest (step() allocates nothing and uploads nothing); a plan built
// per call costs a few launches and workspace_bytes() of allocator memory each time. The plan keeps
// raw device pointers and owns nothing; copies share the workspace, so steps of one plan (and its
// copies) must be ordered on one stream.
class StepPlan {
 public:
  // The draft's allocator form: allocate(context, bytes), e.g. a function that calls
  // static_cast<gpu::Session*>(context)->workspace(bytes).
  using Allocate = void* (*)(void* context, size_t bytes);

  StepPlan(const TensorList& list, gauge::optim::Precision precision, const gauge::optim::Hyper& hyper,
           const Allocator& allocate, StreamHandle stream);
  StepPlan(const TensorList& list, gauge::optim::Precision precision, const gauge::optim::Hyper& hyper,
           Allocate allocate, void* allocate_context, StreamHandle stream)
      : StepPlan(list, precision, hyper, Allocator([allocate, allocate_context](size_t bytes) {
                   return allocate(allocate_context, bytes);
                 }),
                 stream) {}

  // One optimizer step number `step` (1-based, below 2^30: bias corrections, AdaGrad's lr decay, SGD's
  // first momentum step and the stochastic-rounding keys depend on it) with learning rate `lr` (the
  // schedule already applied; hyper.lr is not used here). Throws gauge::UsageError for a step outside
  // [1, 2^30), a negative or non-finite lr or max_grad_norm. Enqueued on `stream`, no host
  // synchronization: at most two kernel launches (the norm pre-pass, when needed, then the update). `status_device` (an int on the device, may be null)
  // receives 0 when the step was applied, 1 when it was skipped for a NaN/Inf gradient;
  // `norm_device` (a float on the device, may be null) receives the global gradient L2 norm before
  // clipping (asking for it forces the pre-pass). options.seed keys stochastic rounding.
  void step(int64_t step, double lr, const gauge::optim::StepOptions& options, int* status_device, float* norm_device,
            StreamHandle stream) const;

  // The same step with the step number kept on the device, for loops that must not synchronize and
  // may skip steps (loss scaling: a skipped step must not advance Adam's t, as GradScaler never calls
  // optimizer.step() then; PyTorch's capturable Adam keeps a device step tensor the same way).
  // `step_counter_device` (an int64 on the device, 8-byte aligned, not null: else UsageError) holds
  // the number of steps applied so far; the caller initializes it (0 before the first step, e.g. with
  // cudaMemsetAsync) and orders every use of it on `stream`. The norm pre-pass always runs in this
  // mode (two launches per step); its last block, which decides the skip, uses t = *counter + 1 when
  // the step is applied, writes *counter = t, and computes the step-dependent scalars for t on the
  // device (SGD's first step, AdaGrad's clr, Adam's bias corrections, the stochastic-rounding keys'
  // step number) with the host step's own function, so step_counted applied at counter t - 1 and
  // step(t, ...) give the same bits (caveat: pow, step_scalars.h). A skipped step leaves the counter,
  // params, master and states untouched. The counter must stay below 2^30 - 1 before a step (t below
  // 2^30, as step() requires); the device does not check it: that is the caller's to ensure.
  // A counter belongs to one plan: two plans sharing one would advance it twice per step, and each
  // decides its skip on its own gradients (not one global decision as GradScaler's).
  // Everything else (lr, options, status, norm, the UsageErrors) as step().
  void step_counted(int64_t* step_counter_device, double lr, const gauge::optim::StepOptions& options, int* status_device,
                    float* norm_device, StreamHandle stream) const;

  // Sets the states to PyTorch's initial values (zeros; AdaGrad's sum = initial_accumulator_value,
  // rounded to nearest even in bf16_stochastic) and, in bf16_master, master = the bf16 params widened
  // (exact). One launch on `stream`.
  void initialize_state(StreamHandle stream) const;

  // Whether step() runs the norm pre-pass for these options.
  static bool needs_norm_pass(const gauge::optim::StepOptions& options, const float* norm_device) {
    return options.max_grad_norm > 0.0 || !options.allow_nonfinite || norm_device != nullptr;
  }

  // Workspace bytes this plan took, and an upper bound for any placement of tensors of these sizes
  // (for a case's predicted device peak).
  size_t workspace_bytes() const { return workspace_bytes_; }
  static size_t workspace_bytes_bound(std::span<const int64_t> sizes);

  int64_t tensor_count() const { return tensor_count_; }
  int64_t chunk_count() const { return chunk_count_; }
  // Tensors with at least one element whose arrays cannot be 16-byte aligned together (all scalar).
  int64_t scalar_tensor_count() const { return scalar_tensor_count_; }
  gauge::optim::Precision precision() const { return precision_; }
  const gauge::optim::Hyper& hyper() const { return hyper_; }

 private:
  // step() (host_step >= 1, counter null) and step_counted() (counter set, host_step unused).
  void enqueue_step(int64_t host_step, int64_t* step_counter_device, double lr, const gauge::optim::StepOptions& options,
                    int* status_device, float* norm_device, StreamHandle stream) const;

  void* workspace_ = nullptr;  // from the caller's allocator: control, counted step, descriptors, chunks, partials
  size_t workspace_bytes_ = 0;
  gauge::optim::Precision precision_ = gauge::optim::Precision::fp32;
  gauge::optim::Hyper hyper_;
  int64_t tensor_count_ = 0;
  int64_t chunk_count_ = 0;
  int64_t scalar_tensor_count_ = 0;
};

// ---- Gradient accumulation over k micro-batches ---------------------------------------------------
// The mean gradient, as a sum then one scaling (not acc += g / k), with inv_k = accumulation_scale(k)
// = fp32(1 / k) (one IEEE division; exact when k is a power of 2):
//   micro 0 (k > 1):        acc  = g_0
//   micro j, 0 < j < k - 1: acc  = acc + g_j
//   micro k - 1:            out  = (acc + g_{k-1}) * inv_k      (k == 1: out = g_0 * 1 = g_0)
// every operation one IEEE-rounded fp32 add or multiply (no FMA), accumulator always fp32. A plain
// fp32 CPU loop doing the same ("sum in micro-batch order, then multiply by fp32(1 / k)") reproduces
// it bit for bit: that is the faithful low-precision version of reference::optim::accumulate_mean,
// whose double-then-round mean it differs from by the fp32 sum's rounding plus at most one ulp of the
// scaling (compare with the faithful rule, or a tolerance of ~ (k + 1) u sum_j |g_j| / k).
// Micro-batch gradients are fp32 or bf16 (widened exactly); `out` is fp32 (it may be the accumulator
// itself) or bf16 (the RNE cast of the fp32 mean, e.g. the bf16 gradients a bf16 StepPlan reads).
// micro_grads[j][i] is tensor i of micro-batch j (the same pointers may repeat across j when backward
// reuses its buffers).
enum class GradFormat : uint8_t { f32, bf16 };

inline float accumulation_scale(int micro_batches) { return 1.0f / static_cast<float>(micro_batches); }

struct AccumulateList {
  std::vector<std::vector<const void*>> micro_grads;  // [k][tensor], GradFormat `micro`
  std::vector<float*> accumulators;                  // [tensor], fp32 (unused when k == 1: may be null)
  std::vector<void*> outputs;                        // [tensor], GradFormat `output`
  std::vector<int64_t> sizes;                        // [tensor]
};

class AccumulatePlan {
 public:
  // Same allocation and upload rules as StepPlan.
  AccumulatePlan(const AccumulateList& list, GradFormat micro, GradFormat output, const Allocator& allocate,
                 StreamHandle stream);
  AccumulatePlan(const AccumulateList& list, GradFormat micro, GradFormat output, StepPlan::Allocate allocate,
                 void* allocate_context, StreamHandle stream)
      : AccumulatePlan(list, micro, output, Allocator([allocate, allocate_context](size_t bytes) {
                         return allocate(allocate_context, bytes);
                       }),
                       stream) {}

  // Micro-batch `micro` in [0, k), in order: one launch on `stream`.
  void accumulate(int micro, StreamHandle stream) const;

  int micro_batches() const { return micro_batches_; }
  size_t workspace_bytes() const { return workspace_bytes_; }
  int64_t chunk_count() const { return chunk_count_; }
  int64_t scalar_tensor_count() const { return scalar_tensor_count_; }

 private:
  void* workspace_ = nullptr;  // descriptors, grad pointer table [k][tensor], chunks
  size_t workspace_bytes_ = 0;
  GradFormat micro_ = GradFormat::f32;
  GradFormat output_ = GradFormat::f32;
  int micro_batches_ = 0;
  int64_t tensor_count_ = 0;
  int64_t chunk_count_ = 0;
  int64_t scalar_tensor_count_ = 0;
};

}  // namespace gauge::optimized::optim
