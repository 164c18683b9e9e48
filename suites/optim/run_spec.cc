#include "suites/optim/run_spec.h"

#include <sstream>

#include "harness/error.h"
#include "harness/philox.h"
#include "reference/precision/casts.h"

namespace gauge::suites::optim {
namespace {

namespace casts = gauge::reference::precision;

// Llama's proportions (d_model 4096, FFN 11008, vocabulary 32000) scaled to d_model 1024 and six
// layers, embeddings tied: 108,672,000 parameters in 56 tensors.
std::vector<int64_t> transformer_sizes() {
  constexpr int64_t kModel = 1024;
  constexpr int64_t kFfn = 2752;  // 1024 * 11008 / 4096
  constexpr int64_t kVocab = 32000;
  constexpr int kLayers = 6;
  std::vector<int64_t> sizes = {kVocab * kModel};  // token embedding (tied with the output head)
  for (int layer = 0; layer < kLayers; ++layer) {
    sizes.push_back(kModel);                  // attention norm
    for (int projection = 0; projection < 4; ++projection) sizes.push_back(kModel * kModel);  // q, k, v, o
    sizes.push_back(kModel);                  // FFN norm
    sizes.push_back(kFfn * kModel);           // gate
    sizes.push_back(kFfn * kModel);           // up
    sizes.push_back(kModel * kFfn);           // down
  }
  sizes.push_back(kModel);  // final norm
  return sizes;
}

// The 10^9-parameter point of the issue: Llama-2-7B's real shapes (model 4096, FFN 11008, vocabulary
// 32000), as many decoder layers as fit a ~1e9 budget (4 of 32: 131M embedding + 4 x 202M), so the
// tensor sizes and the chunk table are a 7B model's, scaled down in depth only.
std::vector<int64_t> llama7b_slice_sizes() {
  constexpr int64_t kModel = 4096;
  constexpr int64_t kFfn = 11008;
  constexpr int64_t kVocab = 32000;
  constexpr int kLayers = 4;
  std::vector<int64_t> sizes = {kVocab * kModel};
  for (int layer = 0; layer < kLayers; ++layer) {
    sizes.push_back(kModel);
    for (int projection = 0; projection < 4; ++projection) sizes.push_back(kModel * kModel);
    sizes.push_back(kModel);
    for (int projection = 0; projection < 3; ++projection) sizes.push_back(kFfn * kModel);
  }
  sizes.push_back(kModel);
  return sizes;
}

int64_t round_up(int64_t value, int64_t multiple) { return (value + multiple - 1) / multiple * multiple; }

int64_t states_of(const RunSpec& spec) { return gauge::optim::state_count(spec.hyper); }

// fp32 value -> the stored format of a flat buffer.
void put(HostTensor& t, int64_t index, float value) {
  if (t.dtype() == DType::f32) {
    t.view<float>()[static_cast<size_t>(index)] = value;
  } else {
    t.view<uint16_t>()[static_cast<size_t>(index)] = casts::f32_to_bf16(value);
  }
}

// Whether a run reads every gradient in a pass of its own before the update: to skip a step with a
// NaN/Inf gradient before writing anything, and to know the global norm before clipping.
bool has_gradient_pass(const RunSpec& spec) {
  return !spec.options.allow_nonfinite || spec.options.max_grad_norm > 0.0;
}

}  // namespace

std::vector<int64_t> tensor_sizes(TensorListId list) {
  switch (list) {
    case TensorListId::ragged: return {1, 3, 1000, (int64_t{1} << 20) + 7, 4097, 65535, 17};
    case TensorListId::ragged_small: return {1, 3, 1000, 4097, 31};
    case TensorListId::transformer: return transformer_sizes();
    case TensorListId::ragged_tiny: return {1, 3, 7, 1000, 33};
    case TensorListId::llama7b_slice: return llama7b_slice_sizes();
  }
  throw UsageError("unknown tensor list " + std::to_string(static_cast<int64_t>(list)));
}

std::string tensor_list_name(TensorListId list) {
  switch (list) {
    case TensorListId::ragged: return "ragged";
    case TensorListId::ragged_small: return "ragged_small";
    case TensorListId::transformer: return "transformer";
    case TensorListId::ragged_tiny: return "ragged_tiny";
    case TensorListId::llama7b_slice: return "llama7b_slice";
  }
  return "list#" + std::to_string(static_cast<int64_t>(list));
}

uint32_t value_tensor_id(int64_t step, size_t tensor) {
  if (tensor >= kMaxTensors) throw UsageError("optim suite: tensor " + std::to_string(tensor) + " is past kMaxTensors");
  if (step < 0 || step >= int64_t{UINT32_MAX} / kMaxTensors) {
    throw UsageError("optim suite: step " + std::to_string(step) + " is outside the keyed range");
  }
  return static_cast<uint32_t>(step) * kMaxTensors + static_cast<uint32_t>(tensor);
}

Layout make_layout(const std::vector<int64_t>& sizes) {
  if (sizes.empty()) throw UsageError("optim suite: an empty tensor list");
  if (sizes.size() > kMaxTensors) throw UsageError("optim suite: more than kMaxTensors tensors");
  Layout layout;
  layout.sizes = sizes;
  int64_t next = 0;
  for (int64_t size : sizes) {
    if (size < 1) throw UsageError("optim suite: a tensor of " + std::to_string(size) + " elements");
    layout.offsets.push_back(next);
    layout.parameters += size;
    next = round_up(next + size, kAlignElements);
  }
  layout.flat_length = layout.offsets.back() + sizes.back();
  return layout;
}

DType param_dtype(Precision p) { return p == Precision::fp32 ? DType::f32 : DType::bf16; }
DType state_dtype(Precision p) { return p == Precision::bf16_stochastic ? DType::bf16 : DType::f32; }
DType point_dtype(Precision p) { return param_dtype(p); }

RunSpec run_spec(const CaseConfig& config, const Point& point) {
  if (point.dtype != point_dtype(config.precision)) {
    throw UsageError("optim case " + config.name + ": point dtype " + std::string(dtype_name(point.dtype)) +
                     " does not match precision " + gauge::optim::precision_name(config.precision));
  }
  RunSpec spec;
  spec.precision = config.precision;
  spec.hyper = config.hyper;
  spec.schedule = config.schedule;
  spec.options = config.options;
  spec.grad_scale = config.grad_scale;
  spec.sizes = tensor_sizes(static_cast<TensorListId>(point.dim("list")));
  spec.steps = point.dim("steps");
  if (spec.steps < 1) throw UsageError("optim case " + config.name + ": steps must be at least 1");
  return spec;
}

InputIndex input_index(const RunSpec& spec) {
  InputIndex index;
  size_t next = 0;
  index.params = next++;
  if (spec.precision == Precision::bf16_master) index.master = next++;
  index.first_state = next;
  index.states = static_cast<int>(states_of(spec));
  next += static_cast<size_t>(index.states);
  index.grad = next++;
  if (spec.precision != Precision::fp32 && spec.steps > 1) index.grad_staging = next++;
  index.count = next;
  return index;
}

OutputIndex output_index(const RunSpec& spec) {
  OutputIndex index;
  size_t next = 0;
  index.params = next++;
  if (spec.precision == Precision::bf16_master) index.master = next++;
  index.first_state = next;
  index.states = static_cast<int>(states_of(spec));
  next += static_cast<size_t>(index.states);
  index.count = next;
  return index;
}

void fill_gradient(const RunSpec& spec, const Layout& layout, int64_t step, HostTensor& grad) {
  for (size_t i = 0; i < layout.sizes.size(); ++i) {
    const uint32_t id = value_tensor_id(step, i);
    for (int64_t j = 0; j < layout.sizes[i]; ++j) {
      put(grad, layout.offsets[i] + j,
          rng::uniform_at(kGradientSeed, id, static_cast<uint64_t>(j), -spec.grad_scale, spec.grad_scale));
    }
  }
}

std::vector<HostTensor> make_inputs(const RunSpec& spec, uint64_t seed) {
  const Layout layout = make_layout(spec.sizes);
  const InputIndex index = input_index(spec);
  const Shape flat = {layout.flat_length};
  std::vector<HostTensor> inputs(index.count);

  inputs[index.params] = HostTensor("params", param_dtype(spec.precision), flat);
  if (index.master) inputs[*index.master] = HostTensor("master", DType::f32, flat);
  for (size_t i = 0; i < layout.sizes.size(); ++i) {
    const uint32_t id = value_tensor_id(0, i);
    for (int64_t j = 0; j < layout.sizes[i]; ++j) {
      const float v = rng::uniform_at(seed, id, static_cast<uint64_t>(j), -1.0f, 1.0f);
      put(inputs[index.params], layout.offsets[i] + j, v);
      if (index.master) put(inputs[*index.master], layout.offsets[i] + j, v);
    }
  }

  const std::vector<std::string> names = gauge::optim::state_names(spec.hyper);
  for (int k = 0; k < index.states; ++k) {
    HostTensor state(names[static_cast<size_t>(k)], state_dtype(spec.precision), flat);
    if (spec.hyper.algorithm == Algorithm::adagrad && spec.hyper.initial_accumulator_value != 0.0) {
      const auto initial = static_cast<float>(spec.hyper.initial_accumulator_value);
      for (size_t i = 0; i < layout.sizes.size(); ++i) {
        for (int64_t j = 0; j < layout.sizes[i]; ++j) put(state, layout.offsets[i] + j, initial);
      }
    }
    inputs[index.first_state + static_cast<size_t>(k)] = std::move(state);
  }

  inputs[index.grad] = HostTensor("grad", param_dtype(spec.precision), flat);
  fill_gradient(spec, layout, 1, inputs[index.grad]);
  if (index.grad_staging) inputs[*index.grad_staging] = HostTensor("grad_staging", DType::f32, flat);
  return inputs;
}

double step_bytes_per_parameter(const RunSpec& spec) {
  const double param = static_cast<double>(dtype_size(param_dtype(spec.precision)));
  const double grad = param;
  const double states = static_cast<double>(states_of(spec) * static_cast<int64_t>(dtype_size(state_dtype(spec.precision))));
  double update = 0;
  if (spec.precision == Precision::bf16_master) {
    // The fp32 master is read and written; the bf16 parameter is only written (it is derived).
    update = 2.0 * 4.0 + param + grad + 2.0 * states;
  } else {
    update = 2.0 * param + grad + 2.0 * states;
  }
  return update + (has_gradient_pass(spec) ? grad : 0.0);
}

int64_t state_bytes_per_parameter(const Hyper& hyper, Precision precision) {
  const int64_t states = gauge::optim::state_count(hyper) * static_cast<int64_t>(dtype_size(state_dtype(precision)));
  return states + (precision == Precision::bf16_master ? 4 : 0);
}

double step_flops_per_parameter(const RunSpec& spec) {
  const Hyper& h = spec.hyper;
  const bool coupled_decay = h.weight_decay != 0.0 && h.algorithm != Algorithm::adamw;
  double flops = coupled_decay ? 2 : 0;  // d = d + wd * p
  switch (h.algorithm) {
    case Algorithm::sgd:
      if (h.momentum != 0.0) flops += 3 + (h.nesterov ? 2 : 0);  // buf update; d + momentum * buf
      flops += 2;                                                 // p - lr * d
      break;
    case Algorithm::adagrad: flops += 2 + 2 + 3; break;  // sum += d*d; sqrt + eps; p - clr * (d / std)
    case Algorithm::rmsprop:
      flops += 4 + 2;                          // square_avg update; sqrt + eps
      if (h.centered) flops += 3 + 2;          // grad_avg update; square_avg - grad_avg^2
      flops += h.momentum > 0.0 ? 5 : 3;       // buf = m * buf + d / avg, p - lr * buf | p - lr * (d / avg)
      break;
    case Algorithm::adam:
    case Algorithm::adamw:
      if (h.algorithm == Algorithm::adamw && h.weight_decay != 0.0) flops += 1;  // p * (1 - lr * wd)
      flops += 3 + 4 + (h.amsgrad ? 1 : 0) + 3 + 3;  // m; v; max; sqrt / bc2 + eps; p - step * (m / denom)
      break;
  }
  if (spec.options.max_grad_norm > 0.0) flops += 3;  // the norm's square and add, the scaling
  return flops;
}

CostModel cost_model(const RunSpec& spec) {
  const Layout layout = make_layout(spec.sizes);
  const auto flat = static_cast<double>(layout.flat_length);
  const auto parameters = static_cast<double>(layout.parameters);
  const auto steps = static_cast<double>(spec.steps);
  const double param = static_cast<double>(dtype_size(param_dtype(spec.precision)));
  const double state = static_cast<double>(dtype_size(state_dtype(spec.precision)));
  const double master = spec.precision == Precision::bf16_master ? 4.0 : 0.0;
  const double states = static_cast<double>(states_of(spec));

  // Regenerating the gradient of each step when there is more than one: fp32 written, and for bf16
  // read back and written as bf16 by the cast.
  const double regenerate = spec.steps > 1 ? steps * parameters * (spec.precision == Precision::fp32 ? 4.0 : 4.0 + 4.0 + 2.0) : 0.0;

  CostModel m;
  m.bound = Bound::memory;
  m.math_dtype = DType::f32;
  m.flops = steps * parameters * step_flops_per_parameter(spec);
  // The timed optimized call is the steps alone: its outputs were set from the inputs by the case's
  // untimed prepare (the reference's copy of the inputs is part of its call but not of this model).
  m.bytes = regenerate + steps * parameters * step_bytes_per_parameter(spec);

  const InputIndex in = input_index(spec);
  double input_bytes = flat * (param /*params*/ + master + states * state + param /*grad*/);
  if (in.grad_staging) input_bytes += flat * 4.0;
  const double output_bytes = flat * (param + master + states * state);
  const double reference_copies = spec.precision == Precision::fp32 ? 1.0 : 2.0;  // truth (+ faithful)
  const double gradient_buffer = spec.steps > 1 ? flat * param : 0.0;
  m.predicted_host_peak_bytes = static_cast<int64_t>(input_bytes + reference_copies * output_bytes + gradient_buffer);
  m.predicted_device_peak_bytes = static_cast<int64_t>(input_bytes + output_bytes);
  return m;
}

Params run_params(const RunSpec& spec) {
  const Hyper& h = spec.hyper;
  std::ostringstream sizes;
  for (size_t i = 0; i < spec.sizes.size(); ++i) sizes << (i ? "," : "") << spec.sizes[i];
  const char* shapes[] = {"constant", "linear", "cosine"};
  Params p = {
      {"algorithm", gauge::optim::algorithm_name(h.algorithm)},
      {"precision", gauge::optim::precision_name(spec.precision)},
      {"steps", spec.steps},
      {"tensor_sizes", sizes.str()},
      {"align_elements", kAlignElements},
      {"lr", h.lr},
      {"weight_decay", h.weight_decay},
      {"decoupled_weight_decay", h.algorithm == Algorithm::adamw},
  };
  switch (h.algorithm) {
    case Algorithm::sgd:
      p.insert(p.end(), {{"momentum", h.momentum}, {"dampening", h.dampening}, {"nesterov", h.nesterov}});
      break;
    case Algorithm::adagrad:
      p.insert(p.end(), {{"lr_decay", h.lr_decay}, {"initial_accumulator_value", h.initial_accumulator_value}, {"eps", h.eps}});
      break;
    case Algorithm::rmsprop:
      p.insert(p.end(), {{"alpha", h.alpha}, {"eps", h.eps}, {"momentum", h.momentum}, {"centered", h.centered}});
      break;
    case Algorithm::adam:
    case Algorithm::adamw:
      p.insert(p.end(), {{"beta1", h.beta1}, {"beta2", h.beta2}, {"eps", h.eps}, {"amsgrad", h.amsgrad}});
      break;
  }
  p.insert(p.end(), {
      {"warmup_steps", spec.schedule.warmup_steps},
      {"schedule_after_warmup", std::string(shapes[static_cast<int>(spec.schedule.after_warmup)])},
      {"schedule_total_steps", spec.schedule.total_steps},
      {"floor_lr", spec.schedule.floor_lr},
      {"max_grad_norm", spec.options.max_grad_norm},
      {"allow_nonfinite", spec.options.allow_nonfinite},
      {"stochastic_rounding_seed", static_cast<int64_t>(spec.options.seed)},
      {"grad_scale", static_cast<double>(spec.grad_scale)},
      {"initial_values", std::string("uniform_at(harness seed, tensor, element, -1, 1)")},
      {"gradient_seed", static_cast<int64_t>(kGradientSeed)},
      {"gradients", std::string("uniform_at(gradient_seed, step * 4096 + tensor, element, -grad_scale, grad_scale), RNE to bf16 for bf16 precisions")},
      {"update_bytes_per_parameter", step_bytes_per_parameter(spec) - (has_gradient_pass(spec) ? static_cast<double>(dtype_size(param_dtype(spec.precision))) : 0.0)},
      {"step_bytes_per_parameter", step_bytes_per_parameter(spec)},
      {"state_bytes_per_parameter", state_bytes_per_parameter(h, spec.precision)},
      {"step_flops_per_parameter", step_flops_per_parameter(spec)},
  });
  return p;
}

AccumulationSpec accumulation_spec(const Point& point) {
  if (point.dtype != DType::f32 && point.dtype != DType::bf16) {
    throw UsageError("gradient accumulation: micro-batches are f32 or bf16, not " + std::string(dtype_name(point.dtype)));
  }
  AccumulationSpec spec;
  spec.micro_dtype = point.dtype;
  spec.sizes = tensor_sizes(static_cast<TensorListId>(point.dim("list")));
  const int64_t k = point.dim("micro_batches");
  if (k < 1 || k >= kMaxTensors) throw UsageError("gradient accumulation: " + std::to_string(k) + " micro-batches");
  spec.micro_batches = static_cast<int>(k);
  return spec;
}

std::vector<HostTensor> make_accumulation_inputs(const AccumulationSpec& spec, uint64_t seed) {
  const Layout layout = make_layout(spec.sizes);
  std::vector<HostTensor> inputs;
  for (int j = 0; j < spec.micro_batches; ++j) {
    HostTensor micro("micro_" + std::to_string(j), spec.micro_dtype, {layout.flat_length});
    for (size_t i = 0; i < layout.sizes.size(); ++i) {
      const uint32_t id = value_tensor_id(j + 1, i);
      for (int64_t e = 0; e < layout.sizes[i]; ++e) {
        put(micro, layout.offsets[i] + e, rng::uniform_at(seed, id, static_cast<uint64_t>(e), -1.0f, 1.0f));
      }
    }
    inputs.push_back(std::move(micro));
  }
  return inputs;
}

CostModel accumulation_cost_model(const AccumulationSpec& spec) {
  const Layout layout = make_layout(spec.sizes);
  const auto n = static_cast<double>(layout.parameters);
  const auto flat = static_cast<double>(layout.flat_length);
  const auto k = static_cast<double>(spec.micro_batches);
  const auto micro = static_cast<double>(dtype_size(spec.micro_dtype));
  CostModel m;
  m.bound = Bound::memory;
  m.flops = n * k;  // k - 1 additions and one scaling per element
  m.bytes = 4.0 * flat + n * (k * micro + 4.0 + 8.0 * (k - 1.0));
  m.predicted_host_peak_bytes = static_cast<int64_t>(flat * (k * micro + 4.0));
  m.predicted_device_peak_bytes = m.predicted_host_peak_bytes;
  return m;
}

}  // namespace gauge::suites::optim
