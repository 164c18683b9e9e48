#include "suites/checkpoint/chain.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "harness/error.h"
#include "harness/inputs.h"

namespace gauge::suites::checkpoint {

BlockLayout case_layout(BlockKind kind) {
  BlockLayout L;
  L.kind = kind;
  L.rows = 8;
  L.width = kind == BlockKind::linear ? 64 : 32;
  L.hidden = kind == BlockKind::linear ? 0 : 64;
  // ReLU in the linear chain: He initialization keeps the activations' variance through ReLU at any
  // scale, while GELU and SiLU shrink small inputs (their gain falls from 1/2 towards 1/4), so a deep
  // GELU chain vanishes (RMS 1e-32 after 256 blocks) and the check would see only zeros. The residual
  // block keeps GELU: its skip path carries the signal.
  L.activation = kind == BlockKind::linear ? 0 : 1;  // relu : gelu_tanh
  L.dropout = 0.1f;
  L.seed = kDropoutSeed;
  return L;
}

std::vector<HostTensor> chain_inputs(const BlockLayout& L, int64_t blocks, uint64_t seed) {
  const Shape act{L.rows, L.width};
  std::vector<HostTensor> in;
  in.push_back(inputs::normal_f32("x", act, seed, 0, 0.0f, 1.0f));
  in.push_back(inputs::normal_f32("dy", act, seed, 1, 0.0f, 1.0f));
  const int64_t P = L.param_count();
  HostTensor params = inputs::uniform_f32("params", {blocks, P}, seed, 2, -1.0f, 1.0f);
  auto v = params.view<float>();
  const auto scale = [&](int64_t block, int64_t offset, int64_t count, float factor, float shift) {
    for (int64_t j = 0; j < count; ++j) {
      float& e = v[static_cast<size_t>(block * P + offset + j)];
      e = shift + factor * e;
    }
  };
  const auto zero_padding = [&](int64_t block, int64_t from, int64_t to) {
    for (int64_t j = from; j < to; ++j) v[static_cast<size_t>(block * P + j)] = 0.0f;
  };
  const double keep = 1.0 - static_cast<double>(L.dropout);
  const int64_t e = L.first_out();
  for (int64_t b = 0; b < blocks; ++b) {
    if (L.kind == BlockKind::linear) {
      scale(b, L.w1_offset(), L.width * L.width, static_cast<float>(std::sqrt(6.0 * keep / static_cast<double>(L.width))), 0.0f);
      zero_padding(b, L.w1_offset() + L.width * L.width, L.b1_offset());
      scale(b, L.b1_offset(), L.width, 0.1f, 0.0f);
      zero_padding(b, L.b1_offset() + L.width, P);
      continue;
    }
    scale(b, L.gamma_offset(), L.width, 0.1f, 1.0f);
    zero_padding(b, L.width, L.w1_offset());
    scale(b, L.w1_offset(), e * L.width, static_cast<float>(1.0 / std::sqrt(static_cast<double>(L.width))), 0.0f);
    zero_padding(b, L.w1_offset() + e * L.width, L.b1_offset());
    scale(b, L.b1_offset(), e, 0.1f, 0.0f);
    zero_padding(b, L.b1_offset() + e, L.w2_offset());
    scale(b, L.w2_offset(), L.width * e, static_cast<float>(1.0 / std::sqrt(static_cast<double>(e))), 0.0f);
    zero_padding(b, L.w2_offset() + L.width * e, L.b2_offset());
    scale(b, L.b2_offset(), L.width, 0.1f, 0.0f);
    zero_padding(b, L.b2_offset() + L.width, P);
  }
  in.push_back(std::move(params));
  return in;
}

int64_t reference_layer_scratch_bytes(const BlockLayout& L) {
  const int64_t first = std::max(L.width, L.rows);  // linear_backward of the block's first linear
  if (L.kind == BlockKind::linear) return 8 * first;
  const int64_t second = std::max(L.hidden, L.rows);  // linear_backward of W2 (in = hidden)
  return 8 * std::max({first, second, L.width});
}

int64_t block_rounding_depth(const BlockLayout& L) {
  constexpr int64_t kGelu = 64;  // forward; the derivative is counted the same
  if (L.kind == BlockKind::linear) {
    const int64_t dots = L.width /*forward*/ + L.width /*dx*/ + L.rows /*dW, db*/;
    return dots + 2 /*dropout*/ + 2 /*bias epilogue*/;  // ReLU and its derivative are exact
  }
  const int64_t dots = L.width /*norm stats*/ + L.width /*fc1*/ + L.hidden /*fc2*/ + L.width /*fc2 dx*/ +
                       L.hidden /*fc1 dx*/ + L.width /*norm backward*/ + L.rows /*dW2, db2, dW1, db1, dgamma*/;
  return dots + 2 * kGelu + 2 /*dropout*/ + 2 /*residual*/ + 4 /*rsqrtf*/;
}

double chain_magnitude(const BlockLayout& L, int64_t blocks) {
  const double w = static_cast<double>(L.width), rows = static_cast<double>(L.rows);
  if (L.kind == BlockKind::linear) {
    const double a = std::sqrt(6.0 * (1.0 - static_cast<double>(L.dropout)) / w);
    return std::max(w * a, rows);
  }
  const double growth = std::sqrt(1.0 + static_cast<double>(blocks) / 3.0);
  return growth * std::max({1.1 * std::sqrt(w), std::sqrt(static_cast<double>(L.hidden)), rows});
}

ToleranceRule chain_tolerance(const BlockLayout& L, int64_t blocks) {
  if (blocks < 1) throw UsageError("chain_tolerance: blocks must be >= 1, got " + std::to_string(blocks));
  const int64_t per_block = block_rounding_depth(L);
  ToleranceRule rule = tolerance::accumulation(DType::f32, DType::f32, blocks * per_block, chain_magnitude(L, blocks));
  rule.derivation += "; depth = n " + std::to_string(blocks) + " x " + std::to_string(per_block) +
                     " roundings per block forward+backward (dots over width/hidden, batch sums for the parameter "
                     "gradients, GELU 2 x 64 u in the residual block, dropout/residual/rsqrt), relative errors adding along the chain; "
                     "magnitude = sum |terms| of a block's dots from the inputs' variance-preserving init" +
                     (L.kind == BlockKind::residual_mlp ? " times the residual stream's growth sqrt(1 + n/3)" : "");
  return rule;
}

StepResult reference_step(const BlockLayout& L, const gauge::checkpoint::Schedule& schedule,
                          const std::vector<HostTensor>& in) {
  StepResult r{HostTensor("y", DType::f32, in.at(0).shape()), HostTensor("dx", DType::f32, in.at(0).shape()),
               HostTensor("dparams", DType::f32, in.at(2).shape()), {}};
  r.stats = reference::checkpoint::run_step(L, schedule, in.at(0).view<float>(), in.at(1).view<float>(),
                                            in.at(2).view<float>(), r.y.view<float>(), r.dx.view<float>(),
                                            r.dparams.view<float>());
  return r;
}

}  // namespace gauge::suites::checkpoint
