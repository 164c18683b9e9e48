#include "optimized/checkpoint/executor.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <string>
#include <vector>

#include "harness/error.h"
#include "optimized/nn/layers.h"

namespace gauge::optimized::checkpoint {

namespace nn = gauge::optimized::nn;
using gauge::checkpoint::ActionKind;
using gauge::checkpoint::BlockKind;

namespace {

void check(cudaError_t status, const char* what) {
  if (status != cudaSuccess) throw RuntimeFailure(std::string("checkpoint executor: ") + what + ": " + cudaGetErrorString(status));
}

cudaStream_t as_cuda(StreamHandle s) { return reinterpret_cast<cudaStream_t>(s); }

// Residual add: 12 bytes per element moved, no reuse: memory-bound, a few microseconds at most for
// these activations. 16-byte vectors when n is a multiple of 4 and all three pointers are 16-byte aligned,
// grid-stride so any n works with a fixed grid.
__global__ void residual_add_vec4(int64_t n4, const float4* a, const float4* b, float4* out) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n4;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float4 u = a[i], v = b[i];
    out[i] = make_float4(__fadd_rn(u.x, v.x), __fadd_rn(u.y, v.y), __fadd_rn(u.z, v.z), __fadd_rn(u.w, v.w));
  }
}

__global__ void residual_add_scalar(int64_t n, const float* a, const float* b, float* out) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    out[i] = __fadd_rn(a[i], b[i]);
  }
}

constexpr int kThreads = 256;

int grid_for(int64_t work) {
  return static_cast<int>(std::clamp<int64_t>((work + kThreads - 1) / kThreads, 1, 65535));
}

size_t bytes_of(int64_t floats) { return static_cast<size_t>(floats) * sizeof(float); }

// One class of buffers carved from the arena, handed out through a free list as in the reference.
struct DeviceClass {
  float* base = nullptr;
  int64_t stride = 0;  // floats, a multiple of 4
  int64_t count = 0;   // the schedule's predicted high-water count
  std::vector<int> free_list;
  std::vector<int> pending_offload;  // block whose D2H copy still reads the buffer, or -1

  void reset() {
    free_list.clear();
    for (int64_t k = count - 1; k >= 0; --k) free_list.push_back(static_cast<int>(k));
    pending_offload.assign(static_cast<size_t>(count), -1);
  }
  int acquire(const char* what) {
    if (free_list.empty()) throw RuntimeFailure(std::string("checkpoint executor: more ") + what + " buffers than planned");
    const int id = free_list.back();
    free_list.pop_back();
    return id;
  }
  void release(int id) { free_list.push_back(id); }
  float* at(int id) const { return base + static_cast<int64_t>(id) * stride; }
};

struct HostClass {
  float* base = nullptr;
  int64_t stride = 0;
  int64_t count = 0;
  std::vector<int> free_list;
  void reset() {
    free_list.clear();
    for (int64_t k = count - 1; k >= 0; --k) free_list.push_back(static_cast<int>(k));
  }
  int acquire() {
    if (free_list.empty()) throw RuntimeFailure("checkpoint executor: more far buffers than planned");
    const int id = free_list.back();
    free_list.pop_back();
    return id;
  }
  float* at(int id) const { return base + static_cast<int64_t>(id) * stride; }
};

}  // namespace

void residual_add(int64_t n, const float* a, const float* b, float* out, StreamHandle stream) {
  if (n <= 0) return;
  // float4 accesses fault on an address that is not 16-byte aligned, whatever n is.
  const auto aligned16 = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  if (n % 4 == 0 && aligned16(a) && aligned16(b) && aligned16(out)) {
    residual_add_vec4<<<grid_for(n / 4), kThreads, 0, as_cuda(stream)>>>(n / 4, reinterpret_cast<const float4*>(a),
                                                                           reinterpret_cast<const float4*>(b),
                                                                           reinterpret_cast<float4*>(out));
  } else {
    residual_add_scalar<<<grid_for(n), kThreads, 0, as_cuda(stream)>>>(n, a, b, out);
  }
  check(cudaGetLastError(), "residual_add launch");
}

struct ChainExecutor::Impl {
  BlockLayout L;
  Schedule schedule;
  std::unique_ptr<nn::LinearPlan> fc1, fc2;
  DeviceClass activations, tapes, workspaces;
  HostClass far_activations, far_tapes;
  size_t arena = 0, scratch = 0, far = 0;
  void* layer_ws = nullptr;
  float* pinned = nullptr;
  cudaStream_t copy = nullptr;
  // Per block: its forward is done (offload source ready), its D2H copy is done (near buffers
  // reusable), its H2D prefetch is done (backward may read); and compute's use of the prefetch
  // targets is done (the copy may overwrite them).
  std::vector<cudaEvent_t> forward_done, offload_done, prefetch_done, targets_free;
  cudaEvent_t copies_joined = nullptr;
  bool offloads = false;

  ~Impl() {
    // Copies still in flight read or write the pinned far memory freed below.
    if (copy) (void)cudaStreamSynchronize(copy);
    for (auto* list : {&forward_done, &offload_done, &prefetch_done, &targets_free}) {
      for (cudaEvent_t e : *list) cudaEventDestroy(e);
    }
    if (copies_joined) cudaEventDestroy(copies_joined);
    if (copy) cudaStreamDestroy(copy);
    if (pinned) cudaFreeHost(pinned);
  }

  void block_forward(int64_t i, const float* params, const float* x, float* tape, float* ws, float* y,
                     StreamHandle s) const {
    const auto act = static_cast<nn::Activation>(L.activation);
    const auto key = static_cast<uint32_t>(i);
    const int64_t e = L.first_out();
    float* h = tape + L.tape_h_offset();
    float* a = ws + L.forward_a_offset();
    if (L.kind == BlockKind::linear) {
      fc1->forward(x, params + L.w1_offset(), params + L.b1_offset(), h, layer_ws, s);
      nn::bias_activation_forward(act, {L.rows, e}, DType::f32, h, nullptr, a, s);
      nn::dropout_forward(L.dropout, L.seed, key, L.rows * e, DType::f32, a, y, s);
      return;
    }
    float* r = tape + L.tape_r_offset();
    float* d = tape + L.tape_d_offset();
    float* rstd = tape + L.tape_rstd_offset();
    nn::rmsnorm_forward({L.rows, L.width, L.eps}, DType::f32, x, params + L.gamma_offset(), r, rstd, s);
    fc1->forward(r, params + L.w1_offset(), params + L.b1_offset(), h, layer_ws, s);
    nn::bias_activation_forward(act, {L.rows, e}, DType::f32, h, nullptr, a, s);
    nn::dropout_forward(L.dropout, L.seed, key, L.rows * e, DType::f32, a, d, s);
    fc2->forward(d, params + L.w2_offset(), params + L.b2_offset(), y, layer_ws, s);
    residual_add(L.rows * L.width, x, y, y, s);
  }

  void block_backward(int64_t i, const float* params, const float* x, const float* tape, const float* g_out,
                      float* ws, float* g_in, float* dparams, StreamHandle s) const {
    const auto act = static_cast<nn::Activation>(L.activation);
    const auto key = static_cast<uint32_t>(i);
    const int64_t e = L.first_out();
    const float* h = tape + L.tape_h_offset();
    float* da = ws + L.backward_da_offset();
    float* dh = ws + L.backward_dh_offset();
    if (L.kind == BlockKind::linear) {
      nn::dropout_backward(L.dropout, L.seed, key, L.rows * e, DType::f32, g_out, da, s);
      nn::activation_backward(act, L.rows * e, DType::f32, h, da, dh, s);
      fc1->backward(x, params + L.w1_offset(), dh, g_in, dparams + L.w1_offset(), dparams + L.b1_offset(), layer_ws, s);
      return;
    }
    const float* r = tape + L.tape_r_offset();
    const float* d = tape + L.tape_d_offset();
    const float* rstd = tape + L.tape_rstd_offset();
    float* dd = ws + L.backward_dd_offset();
    float* dr = ws + L.backward_dr_offset();
    fc2->backward(d, params + L.w2_offset(), g_out, dd, dparams + L.w2_offset(), dparams + L.b2_offset(), layer_ws, s);
    nn::dropout_backward(L.dropout, L.seed, key, L.rows * e, DType::f32, dd, da, s);
    nn::activation_backward(act, L.rows * e, DType::f32, h, da, dh, s);
    fc1->backward(r, params + L.w1_offset(), dh, dr, dparams + L.w1_offset(), dparams + L.b1_offset(), layer_ws, s);
    nn::rmsnorm_backward({L.rows, L.width, L.eps}, DType::f32, x, params + L.gamma_offset(), rstd, dr, g_in,
                         dparams + L.gamma_offset(), layer_ws, s);
    residual_add(L.rows * L.width, g_in, g_out, g_in, s);
  }

  // A near buffer handed to the compute stream waits for the D2H copy still reading it, if any.
  void wait_pending(DeviceClass& c, int id, cudaStream_t compute) {
    int& block = c.pending_offload[static_cast<size_t>(id)];
    if (block >= 0) {
      check(cudaStreamWaitEvent(compute, offload_done[static_cast<size_t>(block)], 0), "wait for an offload");
      block = -1;
    }
  }
};

ChainExecutor::ChainExecutor(cublasLtContext* lt, const BlockLayout& layout, const Schedule& schedule,
                             const std::function<void*(size_t)>& allocate_device)
    : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  m.L = layout;
  m.schedule = schedule;
  const int64_t e = layout.first_out();
  m.fc1 = std::make_unique<nn::LinearPlan>(lt, nn::LinearShape{layout.rows, layout.width, e}, DType::f32, true);
  size_t layer = m.fc1->workspace_bytes();
  if (layout.kind == BlockKind::residual_mlp) {
    m.fc2 = std::make_unique<nn::LinearPlan>(lt, nn::LinearShape{layout.rows, e, layout.width}, DType::f32, true);
    layer = std::max({layer, m.fc2->workspace_bytes(), nn::norm_backward_workspace_bytes({layout.rows, layout.width, layout.eps})});
  }
  const auto& cost = schedule.predicted;
  m.activations.stride = gauge::checkpoint::round_up4(layout.activation_count());
  m.activations.count = cost.activation_buffers;
  m.tapes.stride = layout.tape_count();
  m.tapes.count = cost.tape_buffers;
  m.workspaces.stride = layout.workspace_count();
  m.workspaces.count = cost.workspace_buffers;
  m.arena = bytes_of(m.activations.stride * m.activations.count + m.tapes.stride * m.tapes.count +
                     m.workspaces.stride * m.workspaces.count);
  m.scratch = (layer + 255) / 256 * 256;
  auto* base = static_cast<float*>(allocate_device(m.arena + m.scratch));
  m.activations.base = base;
  m.tapes.base = m.activations.base + m.activations.stride * m.activations.count;
  m.workspaces.base = m.tapes.base + m.tapes.stride * m.tapes.count;
  m.layer_ws = m.scratch > 0 ? static_cast<void*>(reinterpret_cast<unsigned char*>(base) + m.arena) : nullptr;

  m.offloads = cost.far_tape_buffers > 0;
  if (m.offloads) {
    m.far_activations.stride = m.activations.stride;
    m.far_activations.count = cost.far_activation_buffers;
    m.far_tapes.stride = m.tapes.stride;
    m.far_tapes.count = cost.far_tape_buffers;
    m.far = bytes_of(m.far_activations.stride * m.far_activations.count + m.far_tapes.stride * m.far_tapes.count);
    void* pinned = nullptr;
    check(cudaMallocHost(&pinned, m.far), "pinned far memory");
    m.pinned = static_cast<float*>(pinned);
    m.far_activations.base = m.pinned;
    m.far_tapes.base = m.pinned + m.far_activations.stride * m.far_activations.count;
    check(cudaStreamCreateWithFlags(&m.copy, cudaStreamNonBlocking), "copy stream");
    const auto n = static_cast<size_t>(schedule.blocks);
    for (auto* list : {&m.forward_done, &m.offload_done, &m.prefetch_done, &m.targets_free}) {
      list->resize(n);
      for (cudaEvent_t& ev : *list) check(cudaEventCreateWithFlags(&ev, cudaEventDisableTiming), "event");
    }
    check(cudaEventCreateWithFlags(&m.copies_joined, cudaEventDisableTiming), "event");
  }
}

ChainExecutor::~ChainExecutor() = default;

size_t ChainExecutor::arena_bytes() const { return impl_->arena; }
size_t ChainExecutor::layer_scratch_bytes() const { return impl_->scratch; }
size_t ChainExecutor::far_bytes() const { return impl_->far; }

void ChainExecutor::run(const float* x, const float* dy, const float* params, float* y, float* dx, float* dparams,
                        StreamHandle stream) {
  Impl& m = *impl_;
  const BlockLayout& L = m.L;
  const int64_t n = m.schedule.blocks;
  const int64_t P = L.param_count();
  const cudaStream_t compute = as_cuda(stream);
  m.activations.reset();
  m.tapes.reset();
  m.workspaces.reset();
  m.far_activations.reset();
  m.far_tapes.reset();
  check(cudaMemsetAsync(dparams, 0, bytes_of(n * P), compute), "zeroing dparams");

  const auto un = static_cast<size_t>(n);
  std::vector<int> x_id(un + 1, -1), tape_id(un, -1), x_far(un + 1, -1), tape_far(un, -1);
  std::vector<bool> awaiting_prefetch(un, false);
  int grad_id = -1;
  const auto x_ptr = [&](int64_t j) -> const float* {
    return j == 0 ? x : m.activations.at(x_id[static_cast<size_t>(j)]);
  };
  const size_t act_bytes = bytes_of(L.activation_count());
  const size_t tape_bytes = bytes_of(L.tape_count());

  for (const auto& a : m.schedule.actions) {
    const int64_t i = a.block;
    const auto ui = static_cast<size_t>(i);
    switch (a.kind) {
      case ActionKind::forward: {
        const int ws = m.workspaces.acquire("workspace");
        float* tape = m.workspaces.at(ws);  // an untaped forward keeps its tape in the workspace
        if (a.taped) {
          tape_id[ui] = m.tapes.acquire("tape");
          m.wait_pending(m.tapes, tape_id[ui], compute);
          tape = m.tapes.at(tape_id[ui]);
        }
        float* out = y;
        if (i + 1 < n) {
          x_id[ui + 1] = m.activations.acquire("activation");
          m.wait_pending(m.activations, x_id[ui + 1], compute);
          out = m.activations.at(x_id[ui + 1]);
        }
        m.block_forward(i, params + i * P, x_ptr(i), tape, m.workspaces.at(ws), out, stream);
        m.workspaces.release(ws);
        if (m.offloads) check(cudaEventRecord(m.forward_done[ui], compute), "record forward");
        break;
      }
      case ActionKind::backward: {
        if (awaiting_prefetch[ui]) {
          check(cudaStreamWaitEvent(compute, m.prefetch_done[ui], 0), "wait for a prefetch");
          awaiting_prefetch[ui] = false;
        }
        const int ws = m.workspaces.acquire("workspace");
        int g_in_id = -1;
        float* g_in = dx;
        if (i >= 1) {
          g_in_id = m.activations.acquire("activation");
          m.wait_pending(m.activations, g_in_id, compute);
          g_in = m.activations.at(g_in_id);
        }
        const float* g_out = i == n - 1 ? dy : m.activations.at(grad_id);
        m.block_backward(i, params + i * P, x_ptr(i), m.tapes.at(tape_id[ui]), g_out, m.workspaces.at(ws), g_in,
                         dparams + i * P, stream);
        m.workspaces.release(ws);
        m.tapes.release(tape_id[ui]);
        tape_id[ui] = -1;
        if (i < n - 1) m.activations.release(grad_id);
        grad_id = g_in_id;
        break;
      }
      case ActionKind::release:
        m.activations.release(x_id[ui]);
        x_id[ui] = -1;
        break;
      case ActionKind::offload: {
        // The copy starts when block i's forward is done, overlapping the forwards after it.
        check(cudaStreamWaitEvent(m.copy, m.forward_done[ui], 0), "copy waits for a forward");
        tape_far[ui] = m.far_tapes.acquire();
        check(cudaMemcpyAsync(m.far_tapes.at(tape_far[ui]), m.tapes.at(tape_id[ui]), tape_bytes, cudaMemcpyDeviceToHost, m.copy),
              "offload a tape");
        m.tapes.pending_offload[static_cast<size_t>(tape_id[ui])] = static_cast<int>(i);
        m.tapes.release(tape_id[ui]);
        tape_id[ui] = -1;
        if (i >= 1) {
          x_far[ui] = m.far_activations.acquire();
          check(cudaMemcpyAsync(m.far_activations.at(x_far[ui]), m.activations.at(x_id[ui]), act_bytes,
                                cudaMemcpyDeviceToHost, m.copy),
                "offload an activation");
          m.activations.pending_offload[static_cast<size_t>(x_id[ui])] = static_cast<int>(i);
          m.activations.release(x_id[ui]);
          x_id[ui] = -1;
        }
        check(cudaEventRecord(m.offload_done[ui], m.copy), "record offload");
        break;
      }
      case ActionKind::prefetch: {
        // Targets are near buffers the compute stream may still be using (or that an offload still
        // reads): the copy waits for compute's work so far, which covers both.
        tape_id[ui] = m.tapes.acquire("tape");
        m.tapes.pending_offload[static_cast<size_t>(tape_id[ui])] = -1;
        if (i >= 1) {
          x_id[ui] = m.activations.acquire("activation");
          m.activations.pending_offload[static_cast<size_t>(x_id[ui])] = -1;
        }
        check(cudaEventRecord(m.targets_free[ui], compute), "record targets");
        check(cudaStreamWaitEvent(m.copy, m.targets_free[ui], 0), "copy waits for compute");
        check(cudaMemcpyAsync(m.tapes.at(tape_id[ui]), m.far_tapes.at(tape_far[ui]), tape_bytes, cudaMemcpyHostToDevice, m.copy),
              "prefetch a tape");
        m.far_tapes.free_list.push_back(tape_far[ui]);
        tape_far[ui] = -1;
        if (i >= 1) {
          check(cudaMemcpyAsync(m.activations.at(x_id[ui]), m.far_activations.at(x_far[ui]), act_bytes,
                                cudaMemcpyHostToDevice, m.copy),
                "prefetch an activation");
          m.far_activations.free_list.push_back(x_far[ui]);
          x_far[ui] = -1;
        }
        check(cudaEventRecord(m.prefetch_done[ui], m.copy), "record prefetch");
        awaiting_prefetch[ui] = true;
        break;
      }
    }
  }
  if (m.offloads) {
    check(cudaEventRecord(m.copies_joined, m.copy), "record join");
    check(cudaStreamWaitEvent(compute, m.copies_joined, 0), "join the copy stream");
  }
}

}  // namespace gauge::optimized::checkpoint
