// The two blocks of the checkpointing chain and where each of their tensors lives: plain data shared by
// the reference and the CUDA executors (no arithmetic here). Sizes are in fp32 elements.
//
// linear block ("Linear -> activation -> dropout"), width w:
//     h = x W^T + b            W [w, w], b [w]
//     y = dropout_i(act(h))    mask keyed by (seed, block i, element)
//   tape (what backward needs besides x): h.
// residual_mlp block (pre-norm residual MLP), width w, hidden e:
//     r = rmsnorm(x) * gamma   (rstd saved)                  gamma [w]
//     h = r W1^T + b1                                        W1 [e, w], b1 [e]
//     d = dropout_i(act(h))
//     y = x + (d W2^T + b2)    (the sum rounded once)        W2 [w, e], b2 [w]
//   tape: r, h, d, rstd.
// Backward of the residual block: dd, dW2, db2 from linear(d, W2); da = dropout'(dd); dh = act'(h) da;
// dr, dW1, db1 from linear(r, W1); dx_norm, dgamma from rmsnorm(x, rstd); g_in = dx_norm + g_out.
//
// Parameters of block i are params[i * param_count, (i+1) * param_count), in the order listed above;
// their gradients use the same layout. Every region starts at a multiple of 4 elements (16 bytes), so
// the CUDA side can use 16-byte vector accesses on each.
#pragma once

#include <cstdint>

#include "reference/checkpoint/schedule.h"

namespace gauge::checkpoint {

enum class BlockKind : uint8_t { linear, residual_mlp };

inline constexpr int64_t round_up4(int64_t v) { return (v + 3) / 4 * 4; }

struct BlockLayout {
  BlockKind kind = BlockKind::linear;
  int64_t rows = 0;    // batch
  int64_t width = 0;   // w: block input and output features
  int64_t hidden = 0;  // e: residual_mlp only
  uint8_t activation = 1;  // reference::nn::Activation (0 relu, 1 gelu_tanh, 2 silu)
  float dropout = 0.0f;
  uint64_t seed = 0;
  float eps = 1e-5f;  // RMSNorm

  // ---- parameters (per block) ----
  int64_t gamma_offset() const { return 0; }
  int64_t w1_offset() const { return kind == BlockKind::linear ? 0 : round_up4(width); }
  int64_t b1_offset() const { return w1_offset() + round_up4(first_out() * width); }
  int64_t w2_offset() const { return b1_offset() + round_up4(first_out()); }
  int64_t b2_offset() const { return w2_offset() + round_up4(width * hidden); }
  int64_t param_count() const {
    return kind == BlockKind::linear ? b1_offset() + round_up4(width) : b2_offset() + round_up4(width);
  }
  // The first linear maps width -> first_out(): width for the linear block, hidden for the MLP.
  int64_t first_out() const { return kind == BlockKind::linear ? width : hidden; }

  // ---- activations ----
  int64_t activation_count() const { return rows * width; }

  // ---- tape: linear {h}; residual_mlp {r, h, d, rstd} ----
  int64_t tape_r_offset() const { return 0; }
  int64_t tape_h_offset() const { return kind == BlockKind::linear ? 0 : round_up4(rows * width); }
  int64_t tape_d_offset() const { return tape_h_offset() + round_up4(rows * first_out()); }
  int64_t tape_rstd_offset() const { return tape_d_offset() + round_up4(rows * hidden); }
  int64_t tape_count() const {
    return kind == BlockKind::linear ? round_up4(rows * width) : tape_rstd_offset() + round_up4(rows);
  }

  // ---- workspace: one block's scratch during a forward or a backward ----
  // forward: [a tape region, used when the forward is untaped | a = act(h)]
  int64_t forward_a_offset() const { return tape_count(); }
  int64_t forward_workspace_count() const { return tape_count() + round_up4(rows * first_out()); }
  // backward, linear: [da | dh]; residual_mlp: [dd | da | dh | dr]
  int64_t backward_dd_offset() const { return 0; }
  int64_t backward_da_offset() const { return kind == BlockKind::linear ? 0 : round_up4(rows * hidden); }
  int64_t backward_dh_offset() const { return backward_da_offset() + round_up4(rows * first_out()); }
  int64_t backward_dr_offset() const { return backward_dh_offset() + round_up4(rows * first_out()); }
  int64_t backward_workspace_count() const {
    return kind == BlockKind::linear ? backward_dr_offset() : backward_dr_offset() + round_up4(rows * width);
  }
  int64_t workspace_count() const {
    return forward_workspace_count() > backward_workspace_count() ? forward_workspace_count()
                                                                  : backward_workspace_count();
  }

  // FLOPs of one block forward and one backward (multiply-adds count two; pointwise work ignored).
  double forward_flops() const {
    const double r = static_cast<double>(rows), w = static_cast<double>(width), e = static_cast<double>(hidden);
    return kind == BlockKind::linear ? 2.0 * r * w * w : 4.0 * r * w * e;
  }
  double backward_flops() const { return 2.0 * forward_flops(); }

  // fp32 bytes of each buffer class of schedule.h.
  BufferSizes buffer_sizes() const {
    return {activation_count() * 4, tape_count() * 4, workspace_count() * 4};
  }
};

}  // namespace gauge::checkpoint
