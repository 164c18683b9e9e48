// The chains the checkpoint suite trains: block shapes, inputs and one reference step, shared by the
// case declarations and the tests.
#pragma once

#include <cstdint>
#include <vector>

#include "harness/tensor.h"
#include "harness/tolerance.h"
#include "reference/checkpoint/block_layout.h"
#include "reference/checkpoint/executor.h"
#include "reference/checkpoint/schedule.h"

namespace gauge::suites::checkpoint {

using gauge::checkpoint::BlockKind;
using gauge::checkpoint::BlockLayout;

inline constexpr uint64_t kDropoutSeed = 0x636b7074ull;  // "ckpt"

// linear: batch 8 x width 64, ReLU, dropout 0.1 (ReLU keeps He-initialized activations at their scale
// through any depth; GELU would make them vanish).
// residual_mlp: batch 8 x width 32, hidden 64, GELU (tanh), dropout 0.1.
// Small on purpose: the CPU reference of recompute-all at n = 256 evaluates 32,896 block forwards.
BlockLayout case_layout(BlockKind kind);

// x [rows, width] ~ N(0, 1); dy [rows, width] ~ N(0, 1); params [n, param_count]: weights
// U(-a, a) with a = sqrt(6 (1 - p) / fan_in) for the linear block (variance-preserving through ReLU and
// dropout) and a = 1 / sqrt(fan_in) in the MLP, biases U(-0.1, 0.1), gamma 1 + U(-0.1, 0.1), padding 0.
std::vector<HostTensor> chain_inputs(const BlockLayout& layout, int64_t blocks, uint64_t seed);

// Counted scratch of reference/nn itself during one block backward, on top of the executor's pool:
// linear_backward keeps a row of max(in, rows) doubles, rmsnorm_backward one of cols doubles; the
// layers run one after the other, so the largest is the block's. (The peak of a step is reached
// during its last backward, when the pool already holds all it ever will.) If reference/nn changes its
// temporaries, CountedPeakIsThePrediction says so.
int64_t reference_layer_scratch_bytes(const BlockLayout& layout);

// ---- The rule binding the fp32 CUDA executor (optimized/checkpoint) to this reference ----------------
// One rule for the three outputs y, dx and dparams: tolerance::accumulation(f32, f32, depth, magnitude).
//
// depth. To first order, relative rounding errors add along a dependency path (Higham 3.3: products of
// (1 + d_i) with |d_i| <= u stay within gamma_k for k roundings), and every output sits at the end of a
// path through at most n block forwards and n block backwards: y through n forwards, dx through n
// forwards and n backwards, block i's parameter gradient through i forwards (its x) and n - i forwards
// and n - i - 1 backwards (its g_out). So n x (the roundings on a path through one block's forward and
// backward) bounds every path, and for block i's parameter gradient the one sum over the batch is
// inside that count. One block contributes:
//   linear:       forward dot over width; backward dx dot over width (= out); dW, db sums over rows
//   residual_mlp: forward: norm statistics over width, fc1 dot over width, fc2 dot over hidden;
//                 backward: fc2 dx dot over width, fc1 dx dot over hidden, norm backward's row sums over
//                 width; dW2/db2, dW1/db1, dgamma sums over rows
//   pointwise: ReLU exact (linear); GELU-tanh (residual_mlp) forward 64 u (the ULP rule of suites/nn: expf's 2 ulp plus the argument's
//                 roundings amplified by exp) and its derivative, counted at the same 64 u (near the
//                 derivative's zeros its error is absolute: the atol below covers it); dropout's scale,
//                 forward and back (1 u each); the residual add, forward and back (1 u each) and rsqrtf
//                 (2 ulp = 4 u) for residual_mlp, 2 u for the linear block's bias epilogue.
// This is a worst-case count: rounding errors of opposite signs cancel in practice, and the blocks'
// Jacobians are taken as norm ~1 (variance-preserving initialization, chain_inputs).
//
// magnitude (atol = rtol x magnitude): the typical size of sum |terms| of the dots whose roundings the
// depth counts (tolerance.h), from chain_inputs' initialization: x, dy ~ N(0, 1) (E|v| <= 1), a linear
// block's weights bounded by a = sqrt(6 (1 - p) / w). In the linear chain He initialization through
// ReLU and inverted dropout keeps the activations' variance, in expectation, from block to block (the
// test below prints RMS and max per n), so the first block's sizes bound the rest:
//   linear: max(width x a (forward dot, backward dx dot), rows x 1 x 1 (dW: a sum over the batch)).
// residual_mlp: the residual stream grows: each block adds a branch of variance E[d^2] / 3 <= 1/3
// (W2 ~ U(+-1/sqrt(e)): e x E[d^2] / (3 e)), so RMS(x_n) <= sqrt(1 + n / 3); the branch's dots see the
// normalized input (gamma <= 1.1) and weights 1/sqrt(fan_in):
//   residual_mlp: sqrt(1 + n / 3) x max(1.1 sqrt(width), sqrt(hidden), rows).
// Elements above the magnitude are judged by rtol |expected|; where dx has vanished (deep linear
// chains) the rule can only say it is below atol.
// tolerance_test.cc: the magnitude covers the outputs' RMS at every n of the cases, and the rule rejects
// planted errors (a block gradient x 1.01, one dropout element, one dx element x 1.01) at n = 8 and 16.
int64_t block_rounding_depth(const BlockLayout& layout);
double chain_magnitude(const BlockLayout& layout, int64_t blocks);
ToleranceRule chain_tolerance(const BlockLayout& layout, int64_t blocks);

struct StepResult {
  HostTensor y, dx, dparams;
  reference::checkpoint::StepStats stats;
};
// Outputs are allocated first, so a PeakScope opened before this call sees outputs + pool.
StepResult reference_step(const BlockLayout& layout, const gauge::checkpoint::Schedule& schedule,
                          const std::vector<HostTensor>& inputs);

}  // namespace gauge::suites::checkpoint
