#include "reference/checkpoint/executor.h"

#include <algorithm>
#include <string>
#include <vector>

#include "harness/error.h"
#include "harness/memory.h"
#include "reference/nn/layers.h"

namespace gauge::reference::checkpoint {

namespace nn = gauge::reference::nn;
using gauge::checkpoint::ActionKind;
using gauge::checkpoint::BlockKind;

namespace {

std::span<const float> part(std::span<const float> s, int64_t offset, int64_t count) {
  return s.subspan(static_cast<size_t>(offset), static_cast<size_t>(count));
}
std::span<float> part(std::span<float> s, int64_t offset, int64_t count) {
  return s.subspan(static_cast<size_t>(offset), static_cast<size_t>(count));
}

// Buffers of one class, reused through a free list; `Storage` is HostVector<float> for near memory
// (counted) and std::vector<float> for far memory (not counted: it stands for pinned host memory).
template <class Storage>
class ClassPool {
 public:
  explicit ClassPool(int64_t count) : count_(count) {}
  int acquire() {
    int id;
    if (!free_.empty()) {
      id = free_.back();
      free_.pop_back();
    } else {
      id = static_cast<int>(buffers_.size());
      buffers_.emplace_back(static_cast<size_t>(count_));
    }
    ++in_use_;
    return id;
  }
  void release(int id) {
    free_.push_back(id);
    --in_use_;
  }
  std::span<float> at(int id) { return {buffers_[static_cast<size_t>(id)].data(), static_cast<size_t>(count_)}; }
  int64_t high_water() const { return static_cast<int64_t>(buffers_.size()); }
  int64_t bytes() const { return high_water() * count_ * static_cast<int64_t>(sizeof(float)); }
  int64_t in_use() const { return in_use_; }

 private:
  int64_t count_;
  std::vector<Storage> buffers_;
  std::vector<int> free_;
  int64_t in_use_ = 0;
};

using NearPool = ClassPool<mem::HostVector<float>>;
using FarPool = ClassPool<std::vector<float>>;

void require(std::span<const float> s, int64_t expected, const char* what) {
  if (static_cast<int64_t>(s.size()) != expected) {
    throw UsageError(std::string("checkpoint step: ") + what + " has " + std::to_string(s.size()) +
                     " elements, the chain needs " + std::to_string(expected));
  }
}

}  // namespace

void block_forward(const BlockLayout& L, int64_t block, std::span<const float> params, std::span<const float> x,
                   std::span<float> tape, std::span<float> workspace, std::span<float> y) {
  const auto act = static_cast<nn::Activation>(L.activation);
  const auto key = static_cast<uint32_t>(block);
  const int64_t e = L.first_out();
  const auto h = part(tape, L.tape_h_offset(), L.rows * e);
  const auto a = part(workspace, L.forward_a_offset(), L.rows * e);
  if (L.kind == BlockKind::linear) {
    nn::linear_forward({L.rows, L.width, L.width}, x, part(params, L.w1_offset(), L.width * L.width),
                       part(params, L.b1_offset(), L.width), h);
    nn::activation_forward(act, h, a);
    nn::dropout_forward(L.dropout, L.seed, key, a, y);
    return;
  }
  const auto r = part(tape, L.tape_r_offset(), L.rows * L.width);
  const auto d = part(tape, L.tape_d_offset(), L.rows * e);
  const auto rstd = part(tape, L.tape_rstd_offset(), L.rows);
  nn::rmsnorm_forward({L.rows, L.width, L.eps}, x, part(params, L.gamma_offset(), L.width), r, rstd);
  nn::linear_forward({L.rows, L.width, e}, r, part(params, L.w1_offset(), e * L.width), part(params, L.b1_offset(), e), h);
  nn::activation_forward(act, h, a);
  nn::dropout_forward(L.dropout, L.seed, key, a, d);
  nn::linear_forward({L.rows, e, L.width}, d, part(params, L.w2_offset(), L.width * e),
                     part(params, L.b2_offset(), L.width), y);
  for (size_t j = 0; j < y.size(); ++j) y[j] = x[j] + y[j];  // the residual, one fp32 rounding
}

void block_backward(const BlockLayout& L, int64_t block, std::span<const float> params, std::span<const float> x,
                    std::span<const float> tape, std::span<const float> g_out, std::span<float> workspace,
                    std::span<float> g_in, std::span<float> dparams) {
  const auto act = static_cast<nn::Activation>(L.activation);
  const auto key = static_cast<uint32_t>(block);
  const int64_t e = L.first_out();
  const auto h = part(tape, L.tape_h_offset(), L.rows * e);
  const auto da = part(workspace, L.backward_da_offset(), L.rows * e);
  const auto dh = part(workspace, L.backward_dh_offset(), L.rows * e);
  if (L.kind == BlockKind::linear) {
    nn::dropout_backward(L.dropout, L.seed, key, g_out, da);
    nn::activation_backward(act, h, da, dh);
    nn::linear_backward({L.rows, L.width, L.width}, x, part(params, L.w1_offset(), L.width * L.width), dh, g_in,
                        part(dparams, L.w1_offset(), L.width * L.width), part(dparams, L.b1_offset(), L.width));
    return;
  }
  const auto r = part(tape, L.tape_r_offset(), L.rows * L.width);
  const auto d = part(tape, L.tape_d_offset(), L.rows * e);
  const auto rstd = part(tape, L.tape_rstd_offset(), L.rows);
  const auto dd = part(workspace, L.backward_dd_offset(), L.rows * e);
  const auto dr = part(workspace, L.backward_dr_offset(), L.rows * L.width);
  nn::linear_backward({L.rows, e, L.width}, d, part(params, L.w2_offset(), L.width * e), g_out, dd,
                      part(dparams, L.w2_offset(), L.width * e), part(dparams, L.b2_offset(), L.width));
  nn::dropout_backward(L.dropout, L.seed, key, dd, da);
  nn::activation_backward(act, h, da, dh);
  nn::linear_backward({L.rows, L.width, e}, r, part(params, L.w1_offset(), e * L.width), dh, dr,
                      part(dparams, L.w1_offset(), e * L.width), part(dparams, L.b1_offset(), e));
  nn::rmsnorm_backward({L.rows, L.width, L.eps}, x, part(params, L.gamma_offset(), L.width), rstd, dr, g_in,
                       part(dparams, L.gamma_offset(), L.width));
  for (size_t j = 0; j < g_in.size(); ++j) g_in[j] = g_in[j] + g_out[j];  // the residual path
}

StepStats run_step(const BlockLayout& L, const Schedule& schedule, std::span<const float> x,
                   std::span<const float> dy, std::span<const float> params, std::span<float> y,
                   std::span<float> dx, std::span<float> dparams) {
  const int64_t n = schedule.blocks;
  const int64_t A = L.activation_count();
  const int64_t P = L.param_count();
  require(x, A, "x");
  require(dy, A, "dy");
  require(params, n * P, "params");
  require(y, A, "y");
  require(dx, A, "dx");
  require(dparams, n * P, "dparams");
  (void)gauge::checkpoint::replay(schedule);  // a schedule that cannot run throws here, before any work
  // Padding between parameter regions is part of the gradient output: zero, not left undefined.
  for (float& v : dparams) v = 0.0f;

  NearPool activations(A), tapes(L.tape_count()), workspaces(L.workspace_count());
  FarPool far_activations(A), far_tapes(L.tape_count());
  // Where each x_j, tape_i and gradient lives: a pool buffer id, or -1.
  std::vector<int> x_id(static_cast<size_t>(n + 1), -1), x_far(static_cast<size_t>(n + 1), -1);
  std::vector<int> tape_id(static_cast<size_t>(n), -1), tape_far(static_cast<size_t>(n), -1);
  int grad_id = -1;  // g_{i+1} of the next backward, when it is a buffer
  StepStats stats;

  const auto x_span = [&](int64_t j) -> std::span<const float> {
    return j == 0 ? x : std::span<const float>(activations.at(x_id[static_cast<size_t>(j)]));
  };
  const auto block_params = [&](int64_t i) { return part(params, i * P, P); };

  for (const auto& a : schedule.actions) {
    const int64_t i = a.block;
    const auto ui = static_cast<size_t>(i);
    switch (a.kind) {
      case ActionKind::forward: {
        const int ws = workspaces.acquire();
        std::span<float> tape;
        if (a.taped) {
          tape_id[ui] = tapes.acquire();
          tape = tapes.at(tape_id[ui]);
        } else {
          tape = part(workspaces.at(ws), 0, L.tape_count());
        }
        std::span<float> out = y;
        if (i + 1 < n) {
          x_id[ui + 1] = activations.acquire();
          out = activations.at(x_id[ui + 1]);
        }
        block_forward(L, i, block_params(i), x_span(i), tape, workspaces.at(ws), out);
        workspaces.release(ws);
        ++stats.measured.forwards;
        break;
      }
      case ActionKind::backward: {
        const int ws = workspaces.acquire();
        int g_in_id = -1;
        std::span<float> g_in = dx;
        if (i >= 1) {
          g_in_id = activations.acquire();
          g_in = activations.at(g_in_id);
        }
        const std::span<const float> g_out = i == n - 1 ? dy : std::span<const float>(activations.at(grad_id));
        block_backward(L, i, block_params(i), x_span(i), tapes.at(tape_id[ui]), g_out, workspaces.at(ws), g_in,
                       part(dparams, i * P, P));
        workspaces.release(ws);
        tapes.release(tape_id[ui]);
        tape_id[ui] = -1;
        if (i < n - 1) activations.release(grad_id);
        grad_id = g_in_id;
        break;
      }
      case ActionKind::release:
        activations.release(x_id[ui]);
        x_id[ui] = -1;
        break;
      case ActionKind::offload: {
        tape_far[ui] = far_tapes.acquire();
        auto to = far_tapes.at(tape_far[ui]);
        auto from = tapes.at(tape_id[ui]);
        std::copy(from.begin(), from.end(), to.begin());
        tapes.release(tape_id[ui]);
        tape_id[ui] = -1;
        if (i >= 1) {
          x_far[ui] = far_activations.acquire();
          auto xf = activations.at(x_id[ui]);
          std::copy(xf.begin(), xf.end(), far_activations.at(x_far[ui]).begin());
          activations.release(x_id[ui]);
          x_id[ui] = -1;
        }
        break;
      }
      case ActionKind::prefetch: {
        tape_id[ui] = tapes.acquire();
        auto from = far_tapes.at(tape_far[ui]);
        std::copy(from.begin(), from.end(), tapes.at(tape_id[ui]).begin());
        far_tapes.release(tape_far[ui]);
        tape_far[ui] = -1;
        if (i >= 1) {
          x_id[ui] = activations.acquire();
          auto xf = far_activations.at(x_far[ui]);
          std::copy(xf.begin(), xf.end(), activations.at(x_id[ui]).begin());
          far_activations.release(x_far[ui]);
          x_far[ui] = -1;
        }
        break;
      }
    }
  }
  stats.measured.activation_buffers = activations.high_water();
  stats.measured.tape_buffers = tapes.high_water();
  stats.measured.workspace_buffers = workspaces.high_water();
  stats.measured.far_activation_buffers = far_activations.high_water();
  stats.measured.far_tape_buffers = far_tapes.high_water();
  stats.near_bytes = activations.bytes() + tapes.bytes() + workspaces.bytes();
  stats.far_bytes = far_activations.bytes() + far_tapes.bytes();
  return stats;
}

}  // namespace gauge::reference::checkpoint
