// Mixed-precision MLP training recipes (semantics in mlp_recipes.h). Plain loops over the reference
// nn layers; every rounding a recipe does is an explicit call to the reference casts.
#include "reference/precision/mlp_recipes.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <span>
#include <string>

#include "harness/error.h"
#include "harness/inputs.h"
#include "harness/memory.h"
#include "harness/philox.h"
#include "reference/nn/layers.h"
#include "reference/precision/casts.h"
#include "reference/precision/stochastic_rounding.h"

namespace gauge::reference::precision {
namespace {

namespace nn = gauge::reference::nn;
using mem::HostVector;

enum class Format : uint8_t { f32, bf16, f16 };

Format compute_format(Recipe r) {
  switch (r) {
    case Recipe::fp32:
      return Format::f32;
    case Recipe::f16_scaled:
    case Recipe::f16_unscaled:
      return Format::f16;
    default:
      return Format::bf16;
  }
}

uint16_t narrow(Format f, float x) { return f == Format::bf16 ? f32_to_bf16(x) : f32_to_f16(x); }
float widen(Format f, uint16_t bits) { return f == Format::bf16 ? bf16_to_f32(bits) : f16_to_f32(bits); }

// Storing a value in the compute format: identity in fp32, RNE in bf16 / fp16.
void store_in_format(Format f, std::span<float> values) {
  if (f == Format::f32) return;
  for (float& x : values) x = widen(f, narrow(f, x));
}

// Philox tensor ids of the task's random draws.
constexpr uint32_t kTeacherFirstId = 1;     // 2 tensors
constexpr uint32_t kInitFirstId = 16;       // 6 tensors
constexpr uint32_t kBatchFirstId = 1u << 16;  // one per step

struct Shapes {
  int64_t in[3];
  int64_t out[3];
};
Shapes shapes_of(const MlpTask& t) { return Shapes{{t.inputs, t.hidden, t.hidden}, {t.hidden, t.hidden, t.classes}}; }

// Tensor k: layer k / 2, weight (k even, [out, in]) or bias (k odd, [out]).
int64_t tensor_size(const Shapes& s, int k) {
  const int layer = k / 2;
  return k % 2 == 0 ? s.out[layer] * s.in[layer] : s.out[layer];
}

// ---- The task --------------------------------------------------------------------------------------

struct Teacher {
  HostTensor w1;  // [teacher_hidden, inputs]
  HostTensor w2;  // [classes, teacher_hidden]
};

Teacher make_teacher(const MlpTask& t) {
  return Teacher{
      inputs::normal_f32("teacher_w1", {t.teacher_hidden, t.inputs}, t.seed, kTeacherFirstId, 0.0f,
                         static_cast<float>(1.0 / std::sqrt(static_cast<double>(t.inputs)))),
      inputs::normal_f32("teacher_w2", {t.classes, t.teacher_hidden}, t.seed, kTeacherFirstId + 1, 0.0f,
                         static_cast<float>(1.0 / std::sqrt(static_cast<double>(t.teacher_hidden))))};
}

// The teacher's class of each row of x [batch, inputs].
void label_batch(const MlpTask& t, const Teacher& teacher, std::span<const float> x, std::span<int32_t> labels) {
  const auto w1 = teacher.w1.view<float>();
  const auto w2 = teacher.w2.view<float>();
  HostVector<double> hidden(static_cast<size_t>(t.teacher_hidden));
  for (int64_t r = 0; r < t.batch; ++r) {
    for (int64_t h = 0; h < t.teacher_hidden; ++h) {
      double sum = 0.0;
      for (int64_t i = 0; i < t.inputs; ++i) sum += static_cast<double>(w1[h * t.inputs + i]) * x[r * t.inputs + i];
      hidden[h] = std::tanh(sum);
    }
    int32_t best = 0;
    double best_logit = -INFINITY;
    for (int64_t c = 0; c < t.classes; ++c) {
      double logit = 0.0;
      for (int64_t h = 0; h < t.teacher_hidden; ++h) logit += static_cast<double>(w2[c * t.teacher_hidden + h]) * hidden[h];
      if (logit > best_logit) {
        best_logit = logit;
        best = static_cast<int32_t>(c);
      }
    }
    labels[r] = best;
  }
}

// One step's slice of the task data.
struct Batch {
  std::span<const float> x;         // [batch, inputs]
  std::span<const int32_t> labels;  // [batch]
};

Batch batch_of(const MlpTask& t, const MlpTaskView& data, int64_t step) {
  const auto rows = static_cast<size_t>(t.batch);
  return Batch{data.batches.subspan(static_cast<size_t>(step) * rows * static_cast<size_t>(t.inputs),
                                    rows * static_cast<size_t>(t.inputs)),
               data.labels.subspan(static_cast<size_t>(step) * rows, rows)};
}

// Tensor k's initial values: its slice of data.initial.
std::span<const float> initial_tensor(const Shapes& s, const MlpTaskView& data, int k) {
  size_t offset = 0;
  for (int j = 0; j < k; ++j) offset += static_cast<size_t>(tensor_size(s, j));
  return data.initial.subspan(offset, static_cast<size_t>(tensor_size(s, k)));
}

void check_task_data(const MlpTask& t, const MlpTaskView& data) {
  const auto count = [](int64_t n) { return static_cast<size_t>(n); };
  if (data.batches.size() != count(t.steps * t.batch * t.inputs) || data.labels.size() != count(t.steps * t.batch) ||
      data.initial.size() != count(parameter_count(t))) {
    throw UsageError("mlp task data: expected " + std::to_string(t.steps * t.batch * t.inputs) + " batch values, " +
                     std::to_string(t.steps * t.batch) + " labels and " + std::to_string(parameter_count(t)) +
                     " initial weights; got " + std::to_string(data.batches.size()) + ", " +
                     std::to_string(data.labels.size()) + " and " + std::to_string(data.initial.size()));
  }
  for (const int32_t label : data.labels) {
    if (label < 0 || label >= t.classes) throw UsageError("mlp task data: label " + std::to_string(label) + " is not a class");
  }
}

// ---- Stored training state ---------------------------------------------------------------------------

// Everything a recipe keeps between steps; only the members its recipe uses are non-empty.
struct State {
  HostVector<float> weights_f32[6];  // fp32
  HostVector<uint16_t> weights_16[6];  // bf16_master, f16_*, bf16_pure
  HostVector<float> master[6];       // bf16_master, f16_*
  HostVector<float> grads_f32[6];    // fp32
  HostVector<uint16_t> grads_16[6];  // low precision
  HostVector<float> m[6], v[6];      // fp32 states
  HostVector<uint16_t> m16[6], v16[6];  // bf16_pure states
};

void allocate_state(State& st, const Shapes& s, Recipe r, const MlpTaskView& data) {
  const Format f = compute_format(r);
  for (int k = 0; k < 6; ++k) {
    const auto n = static_cast<size_t>(tensor_size(s, k));
    const std::span<const float> initial = initial_tensor(s, data, k);
    if (r == Recipe::fp32) {
      st.weights_f32[k].assign(initial.begin(), initial.end());
      st.grads_f32[k].assign(n, 0.0f);
    } else {
      st.weights_16[k].resize(n);
      for (size_t i = 0; i < n; ++i) st.weights_16[k][i] = narrow(f, initial[i]);
      st.grads_16[k].assign(n, 0);
    }
    if (r == Recipe::bf16_pure) {
      st.m16[k].assign(n, 0);
      st.v16[k].assign(n, 0);
    } else {
      st.m[k].assign(n, 0.0f);
      st.v[k].assign(n, 0.0f);
    }
    if (r != Recipe::fp32 && r != Recipe::bf16_pure) st.master[k].assign(initial.begin(), initial.end());  // unrounded
  }
}

// ---- Forward and backward ------------------------------------------------------------------------

struct Activations {
  HostVector<float> x, z1, a1, z2, a2, logits;
};

// The weights as fp32 values for compute (exact widening of the stored 16-bit weights).
void compute_weights(const State& st, Recipe r, const Shapes& s, HostVector<float> (&w)[6]) {
  const Format f = compute_format(r);
  for (int k = 0; k < 6; ++k) {
    if (r == Recipe::fp32) {
      w[k] = st.weights_f32[k];
    } else {
      w[k].resize(static_cast<size_t>(tensor_size(s, k)));
      for (size_t i = 0; i < w[k].size(); ++i) w[k][i] = widen(f, st.weights_16[k][i]);
    }
  }
}

double forward(const MlpTask& t, const Shapes& s, Format f, const HostVector<float> (&w)[6], const Batch& b,
               Activations& act) {
  act.x.assign(b.x.begin(), b.x.end());
  store_in_format(f, act.x);
  const auto layer = [&](int l, const HostVector<float>& input, HostVector<float>& output) {
    output.resize(static_cast<size_t>(t.batch * s.out[l]));
    nn::linear_forward({t.batch, s.in[l], s.out[l]}, input, w[2 * l], w[2 * l + 1], output);
    store_in_format(f, output);
  };
  const auto gelu = [&](const HostVector<float>& input, HostVector<float>& output) {
    output.resize(input.size());
    nn::activation_forward(nn::Activation::gelu_tanh, input, output);
    store_in_format(f, output);
  };
  layer(0, act.x, act.z1);
  gelu(act.z1, act.a1);
  layer(1, act.a1, act.z2);
  gelu(act.z2, act.a2);
  layer(2, act.a2, act.logits);
  return nn::softmax_cross_entropy_forward(t.batch, t.classes, act.logits, b.labels, {});
}

// Gradients of loss_scale * mean loss, each stored in the compute format (as fp32 values here).
void backward(const MlpTask& t, const Shapes& s, Format f, const HostVector<float> (&w)[6], const Batch& b,
              const Activations& act, float loss_scale, HostVector<float> (&grads)[6]) {
  for (int k = 0; k < 6; ++k) grads[k].resize(static_cast<size_t>(tensor_size(s, k)));
  HostVector<float> dlogits(act.logits.size());
  nn::softmax_cross_entropy_backward(t.batch, t.classes, act.logits, b.labels, loss_scale, dlogits);
  store_in_format(f, dlogits);
  HostVector<float> da2(act.a2.size()), dz2(act.z2.size()), da1(act.a1.size()), dz1(act.z1.size());
  const auto linear_back = [&](int l, const HostVector<float>& input, const HostVector<float>& dy,
                               HostVector<float>* dx) {
    nn::linear_backward({t.batch, s.in[l], s.out[l]}, input, w[2 * l], dy,
                        dx == nullptr ? std::span<float>() : std::span<float>(*dx), grads[2 * l], grads[2 * l + 1]);
    if (dx != nullptr) store_in_format(f, *dx);
    store_in_format(f, grads[2 * l]);
    store_in_format(f, grads[2 * l + 1]);
  };
  linear_back(2, act.a2, dlogits, &da2);
  nn::activation_backward(nn::Activation::gelu_tanh, act.z2, da2, dz2);
  store_in_format(f, dz2);
  linear_back(1, act.a1, dz2, &da1);
  nn::activation_backward(nn::Activation::gelu_tanh, act.z1, da1, dz1);
  store_in_format(f, dz1);
  linear_back(0, act.x, dz1, nullptr);
}

// ---- Adam --------------------------------------------------------------------------------------------

struct AdamScalars {
  float beta1, one_minus_beta1, beta2, one_minus_beta2, eps, step_size, sqrt_bias_correction2;
};

// Per-step scalars in double, rounded once to fp32 (as PyTorch computes them in Python floats).
AdamScalars adam_scalars(const MlpTask& t, int64_t adam_step) {
  const double bc1 = 1.0 - std::pow(t.beta1, static_cast<double>(adam_step));
  const double bc2 = 1.0 - std::pow(t.beta2, static_cast<double>(adam_step));
  return AdamScalars{static_cast<float>(t.beta1), static_cast<float>(1.0 - t.beta1), static_cast<float>(t.beta2),
                     static_cast<float>(1.0 - t.beta2), static_cast<float>(t.eps), static_cast<float>(t.lr / bc1),
                     static_cast<float>(std::sqrt(bc2))};
}

// One element of Adam in fp32: updates m, v and returns the new parameter value.
float adam_element(const AdamScalars& a, float p, float g, float& m, float& v) {
  m = a.beta1 * m + a.one_minus_beta1 * g;
  v = a.beta2 * v + a.one_minus_beta2 * (g * g);
  const float denom = std::sqrt(v) / a.sqrt_bias_correction2 + a.eps;
  return p - a.step_size * (m / denom);
}

void adam_step(const MlpTask& t, Recipe r, State& st, int64_t adam_step_number, float inv_scale) {
  const AdamScalars a = adam_scalars(t, adam_step_number);
  const Format f = compute_format(r);
  for (int k = 0; k < 6; ++k) {
    const size_t n = r == Recipe::fp32 ? st.weights_f32[k].size() : st.weights_16[k].size();
    for (size_t i = 0; i < n; ++i) {
      if (r == Recipe::fp32) {
        st.weights_f32[k][i] = adam_element(a, st.weights_f32[k][i], st.grads_f32[k][i], st.m[k][i], st.v[k][i]);
      } else if (r == Recipe::bf16_pure) {
        float m = bf16_to_f32(st.m16[k][i]);
        float v = bf16_to_f32(st.v16[k][i]);
        const float p = adam_element(a, bf16_to_f32(st.weights_16[k][i]), bf16_to_f32(st.grads_16[k][i]), m, v);
        // Three stored tensors per parameter tensor: slots 0 (param), 1 (m), 2 (v).
        const auto word = [&](uint32_t slot) {
          return stochastic_rounding_word(t.seed, static_cast<uint32_t>(3 * k) + slot, i,
                                          static_cast<uint64_t>(adam_step_number));
        };
        st.weights_16[k][i] = f32_to_bf16_stochastic(p, word(0));
        st.m16[k][i] = f32_to_bf16_stochastic(m, word(1));
        st.v16[k][i] = f32_to_bf16_stochastic(v, word(2));
      } else {
        // The unscale fused into the read: one fp32 multiply (inv_scale is 1 without loss scaling).
        const float g = widen(f, st.grads_16[k][i]) * inv_scale;
        st.master[k][i] = adam_element(a, st.master[k][i], g, st.m[k][i], st.v[k][i]);
        st.weights_16[k][i] = narrow(f, st.master[k][i]);
      }
    }
  }
}

bool any_nonfinite(Format f, const HostVector<uint16_t>& values) {
  for (uint16_t bits : values) {
    if (!std::isfinite(widen(f, bits))) return true;
  }
  return false;
}

int64_t state_bytes_of(const State& st) {
  int64_t bytes = 0;
  for (int k = 0; k < 6; ++k) {
    bytes += static_cast<int64_t>(st.weights_f32[k].capacity() * 4 + st.weights_16[k].capacity() * 2 +
                                  st.master[k].capacity() * 4 + st.grads_f32[k].capacity() * 4 +
                                  st.grads_16[k].capacity() * 2 + st.m[k].capacity() * 4 + st.v[k].capacity() * 4 +
                                  st.m16[k].capacity() * 2 + st.v16[k].capacity() * 2);
  }
  return bytes;
}

}  // namespace

std::string recipe_name(Recipe r) {
  switch (r) {
    case Recipe::fp32:
      return "fp32";
    case Recipe::bf16_master:
      return "bf16_master";
    case Recipe::f16_scaled:
      return "f16_scaled";
    case Recipe::f16_unscaled:
      return "f16_unscaled";
    case Recipe::bf16_pure:
      return "bf16_pure";
  }
  return "unknown";
}

double predicted_state_bytes_per_parameter(Recipe r) { return r == Recipe::bf16_pure ? 8.0 : 16.0; }

void validate(const MlpTask& t) {
  const auto positive = [](int64_t v, const char* name) {
    if (v < 1) throw UsageError(std::string("mlp task: ") + name + " must be >= 1, got " + std::to_string(v));
  };
  positive(t.inputs, "inputs");
  positive(t.hidden, "hidden");
  positive(t.classes, "classes");
  positive(t.teacher_hidden, "teacher_hidden");
  positive(t.batch, "batch");
  positive(t.steps, "steps");
  if (t.steps >= (int64_t{1} << 30)) throw UsageError("mlp task: steps must be below 2^30");
  if (!std::isfinite(t.lr) || t.lr <= 0.0) throw UsageError("mlp task: lr must be finite and > 0, got " + std::to_string(t.lr));
  if (!std::isfinite(t.loss_weight) || t.loss_weight <= 0.0) {
    throw UsageError("mlp task: loss_weight must be finite and > 0, got " + std::to_string(t.loss_weight));
  }
  if (!(t.beta1 >= 0.0 && t.beta1 < 1.0) || !(t.beta2 >= 0.0 && t.beta2 < 1.0)) {
    throw UsageError("mlp task: betas must be in [0, 1)");
  }
  if (!(t.eps >= 0.0) || !std::isfinite(t.eps)) throw UsageError("mlp task: eps must be finite and >= 0");
  validate(t.scaler);
}

int64_t parameter_count(const MlpTask& t) {
  const Shapes s = shapes_of(t);
  int64_t n = 0;
  for (int k = 0; k < 6; ++k) n += tensor_size(s, k);
  return n;
}

MlpTaskData draw_task_data(const MlpTask& t) {
  validate(t);
  const Shapes s = shapes_of(t);
  MlpTaskData data{HostTensor("batches", DType::f32, {t.steps, t.batch, t.inputs}),
                   HostTensor("labels", DType::i32, {t.steps, t.batch}),
                   HostTensor("initial", DType::f32, {parameter_count(t)})};
  const Teacher teacher = make_teacher(t);
  const auto rows = static_cast<size_t>(t.batch);
  for (int64_t step = 0; step < t.steps; ++step) {
    const HostTensor x =
        inputs::normal_f32("x", {t.batch, t.inputs}, t.seed, kBatchFirstId + static_cast<uint32_t>(step), 0.0f, 1.0f);
    const auto values = x.view<float>();
    std::copy(values.begin(), values.end(), data.batches.view<float>().begin() + static_cast<ptrdiff_t>(static_cast<size_t>(step) * values.size()));
    label_batch(t, teacher, values, data.labels.view<int32_t>().subspan(static_cast<size_t>(step) * rows, rows));
  }
  // PyTorch's default Linear init: weight and bias uniform in +-1/sqrt(fan_in).
  size_t offset = 0;
  for (int k = 0; k < 6; ++k) {
    const int64_t n = tensor_size(s, k);
    const float bound = static_cast<float>(1.0 / std::sqrt(static_cast<double>(s.in[k / 2])));
    const HostTensor drawn = inputs::uniform_f32("init", {n}, t.seed, kInitFirstId + static_cast<uint32_t>(k), -bound, bound);
    const auto values = drawn.view<float>();
    std::copy(values.begin(), values.end(), data.initial.view<float>().begin() + static_cast<ptrdiff_t>(offset));
    offset += static_cast<size_t>(n);
  }
  return data;
}

RecipeRun train(const MlpTask& t, Recipe r) {
  const MlpTaskData data = draw_task_data(t);
  return train(t, r, view_of(data));
}

RecipeRun train(const MlpTask& t, Recipe r, const MlpTaskView& data) {
  validate(t);
  check_task_data(t, data);
  const Shapes s = shapes_of(t);
  const Format f = compute_format(r);
  RecipeRun run;
  run.recipe = r;
  run.parameters = parameter_count(t);

  State st;
  const int64_t before_state = mem::host_current_bytes();
  allocate_state(st, s, r, data);
  run.state_bytes = mem::host_current_bytes() - before_state;
  if (run.state_bytes != state_bytes_of(st)) {
    throw RuntimeFailure("mlp recipe: counted state bytes " + std::to_string(run.state_bytes) +
                         " differ from the buffers' sizes " + std::to_string(state_bytes_of(st)));
  }

  DynamicLossScaler scaler(t.scaler);
  int64_t adam_steps = 0;
  const mem::PeakScope peak;
  for (int64_t step = 0; step < t.steps; ++step) {
    const Batch batch = batch_of(t, data, step);
    HostVector<float> w[6];
    compute_weights(st, r, s, w);
    Activations act;
    run.losses.push_back(forward(t, s, f, w, batch, act));
    const float scale = r == Recipe::f16_scaled ? scaler.scale() : 1.0f;
    run.scales.push_back(scale);
    HostVector<float> grads[6];
    backward(t, s, f, w, batch, act, static_cast<float>(t.loss_weight * static_cast<double>(scale)), grads);
    bool found_inf = false;
    for (int k = 0; k < 6; ++k) {
      if (r == Recipe::fp32) {
        std::memcpy(st.grads_f32[k].data(), grads[k].data(), grads[k].size() * sizeof(float));
      } else {
        for (size_t i = 0; i < grads[k].size(); ++i) st.grads_16[k][i] = narrow(f, grads[k][i]);
        if (r == Recipe::f16_scaled) found_inf = found_inf || any_nonfinite(f, st.grads_16[k]);
      }
    }
    if (r == Recipe::f16_scaled) {
      const float inv_scale = scaler.inv_scale();
      if (scaler.update(found_inf)) {
        adam_step(t, r, st, ++adam_steps, inv_scale);
        run.skipped.push_back(0);
      } else {
        ++run.skipped_steps;
        run.skipped.push_back(1);
      }
    } else {
      adam_step(t, r, st, ++adam_steps, 1.0f);
      run.skipped.push_back(0);
    }
  }
  run.step_peak_bytes = peak.peak_above_baseline();
  return run;
}

Underflow measure_underflow(const MlpTask& t, float scale) {
  const MlpTaskData data = draw_task_data(t);
  return measure_underflow(t, scale, view_of(data));
}

Underflow measure_underflow(const MlpTask& t, float scale, const MlpTaskView& data) {
  validate(t);
  check_task_data(t, data);
  if (!std::isfinite(scale) || scale <= 0.0f) {
    throw UsageError("measure_underflow: scale must be finite and > 0, got " + std::to_string(scale));
  }
  const Shapes s = shapes_of(t);
  const Batch batch = batch_of(t, data, 0);
  const auto gradients_of = [&](Recipe r, float loss_scale, HostVector<float> (&grads)[6]) {
    State st;
    allocate_state(st, s, r, data);
    HostVector<float> w[6];
    compute_weights(st, r, s, w);
    Activations act;
    forward(t, s, compute_format(r), w, batch, act);
    backward(t, s, compute_format(r), w, batch, act, static_cast<float>(t.loss_weight * static_cast<double>(loss_scale)),
             grads);
  };
  HostVector<float> fp32[6], unscaled[6], scaled[6];
  gradients_of(Recipe::fp32, 1.0f, fp32);
  gradients_of(Recipe::f16_unscaled, 1.0f, unscaled);
  gradients_of(Recipe::f16_scaled, scale, scaled);
  Underflow u;
  u.scale = scale;
  for (int k = 0; k < 6; ++k) {
    for (size_t i = 0; i < fp32[k].size(); ++i) {
      ++u.gradients;
      const float g = fp32[k][i];
      if (g == 0.0f) continue;
      ++u.nonzero_fp32;
      u.flushed_unscaled += unscaled[k][i] == 0.0f ? 1 : 0;
      u.flushed_scaled += scaled[k][i] == 0.0f ? 1 : 0;
      u.cast_flushed_unscaled += f16_to_f32(f32_to_f16(g)) == 0.0f ? 1 : 0;
      u.cast_flushed_scaled += f16_to_f32(f32_to_f16(g * scale)) == 0.0f ? 1 : 0;
    }
  }
  return u;
}

CurveComparison compare_loss_curves(const std::vector<double>& candidate, const std::vector<double>& baseline,
                                    int64_t window) {
  if (candidate.size() != baseline.size()) {
    throw UsageError("compare_loss_curves: curves of " + std::to_string(candidate.size()) + " and " +
                     std::to_string(baseline.size()) + " steps");
  }
  if (window < 2 || static_cast<size_t>(window) > baseline.size()) {
    throw UsageError("compare_loss_curves: window " + std::to_string(window) + " for a curve of " +
                     std::to_string(baseline.size()) + " steps");
  }
  CurveComparison c;
  c.window = window;
  const auto w = static_cast<size_t>(window);
  for (size_t start = 0; start + w <= baseline.size(); start += w) {
    double difference = 0.0, squares = 0.0;
    for (size_t t = start; t < start + w; ++t) {
      difference += candidate[t] - baseline[t];
      if (t > start) squares += (baseline[t] - baseline[t - 1]) * (baseline[t] - baseline[t - 1]);
    }
    difference /= static_cast<double>(w);
    const double noise = std::sqrt(squares / (2.0 * static_cast<double>(w - 1)));
    const double standard_error = noise / std::sqrt(static_cast<double>(w));
    const double deviation = standard_error > 0.0 ? std::fabs(difference) / standard_error
                                                  : (difference == 0.0 ? 0.0 : INFINITY);
    if (c.windows == 0 || deviation > c.max_deviation || std::isnan(deviation)) {
      c.max_deviation = std::isnan(deviation) ? INFINITY : deviation;
      c.worst_window_start = static_cast<int64_t>(start);
      c.worst_difference = difference;
      c.worst_standard_error = standard_error;
    }
    ++c.windows;
  }
  return c;
}

}  // namespace gauge::reference::precision
