#include "suites/optim/replay.h"

#include <optional>
#include <span>
#include <stdexcept>
#include <string>

#include "harness/error.h"
#include "reference/optim/schedule.h"

namespace gauge::suites::optim {
namespace {

namespace ref = gauge::reference::optim;

template <class T>
std::span<T> tensor_view(HostTensor& flat, const Layout& layout, size_t i) {
  return flat.view<T>().subspan(static_cast<size_t>(layout.offsets[i]), static_cast<size_t>(layout.sizes[i]));
}
template <class T>
std::span<const T> tensor_view(const HostTensor& flat, const Layout& layout, size_t i) {
  return flat.view<T>().subspan(static_cast<size_t>(layout.offsets[i]), static_cast<size_t>(layout.sizes[i]));
}

// The reference's views of the run's stored tensors (`stored`, in output order) and a gradient.
ref::TensorList views(const RunSpec& spec, const Layout& layout, std::vector<HostTensor>& stored, const HostTensor& grad) {
  const OutputIndex out = output_index(spec);
  ref::TensorList list;
  const bool fp32 = spec.precision == Precision::fp32;
  if (spec.precision == Precision::bf16_stochastic) {
    list.states_bf16.resize(static_cast<size_t>(out.states));
  } else {
    list.states_f32.resize(static_cast<size_t>(out.states));
  }
  for (size_t i = 0; i < layout.sizes.size(); ++i) {
    if (fp32) {
      list.params_f32.push_back(tensor_view<float>(stored[out.params], layout, i));
      list.grads_f32.push_back(tensor_view<float>(grad, layout, i));
    } else {
      list.params_bf16.push_back(tensor_view<uint16_t>(stored[out.params], layout, i));
      list.grads_bf16.push_back(tensor_view<uint16_t>(grad, layout, i));
    }
    if (out.master) list.master.push_back(tensor_view<float>(stored[*out.master], layout, i));
    for (int k = 0; k < out.states; ++k) {
      HostTensor& state = stored[out.first_state + static_cast<size_t>(k)];
      if (spec.precision == Precision::bf16_stochastic) {
        list.states_bf16[static_cast<size_t>(k)].push_back(tensor_view<uint16_t>(state, layout, i));
      } else {
        list.states_f32[static_cast<size_t>(k)].push_back(tensor_view<float>(state, layout, i));
      }
    }
  }
  return list;
}

}  // namespace

std::vector<HostTensor> replay(const RunSpec& spec, const std::vector<HostTensor>& inputs, ref::Math math,
                               HostTensor* gradient_buffer) {
  const Layout layout = make_layout(spec.sizes);
  const InputIndex in = input_index(spec);
  const OutputIndex out = output_index(spec);
  if (spec.steps > 1 && gradient_buffer == nullptr) throw std::logic_error("replay: a multi-step run needs a gradient buffer");
  std::vector<HostTensor> stored(out.count);
  stored[out.params] = inputs.at(in.params);
  if (out.master) stored[*out.master] = inputs.at(*in.master);
  for (int k = 0; k < out.states; ++k) {
    stored[out.first_state + static_cast<size_t>(k)] = inputs.at(in.first_state + static_cast<size_t>(k));
  }
  for (int64_t t = 1; t <= spec.steps; ++t) {
    const HostTensor* grad = &inputs.at(in.grad);
    if (spec.steps > 1) {
      fill_gradient(spec, layout, t, *gradient_buffer);
      grad = gradient_buffer;
    }
    const double lr = ref::scheduled_lr(spec.hyper.lr, spec.schedule, t);
    const ref::StepReport report =
        ref::step(spec.hyper, spec.precision, math, views(spec, layout, stored, *grad), t, lr, spec.options);
    if (!report.applied) throw RuntimeFailure("reference step " + std::to_string(t) + ": " + report.skipped_because);
  }
  return stored;
}

ReferenceResult reference_run(const RunSpec& spec, const std::vector<HostTensor>& inputs) {
  std::optional<HostTensor> gradient_buffer;
  if (spec.steps > 1) {
    gradient_buffer.emplace("grad", param_dtype(spec.precision), Shape{make_layout(spec.sizes).flat_length});
  }
  HostTensor* buffer = gradient_buffer ? &*gradient_buffer : nullptr;
  ReferenceResult result;
  result.outputs = replay(spec, inputs, ref::Math::fp64, buffer);
  if (spec.precision != Precision::fp32) result.faithful = replay(spec, inputs, ref::Math::fp32, buffer);
  return result;
}

ReferenceResult accumulation_reference(const AccumulationSpec& spec, const std::vector<HostTensor>& inputs) {
  if (inputs.size() != static_cast<size_t>(spec.micro_batches)) {
    throw UsageError("gradient accumulation: " + std::to_string(inputs.size()) + " inputs for " +
                     std::to_string(spec.micro_batches) + " micro-batches");
  }
  HostTensor mean("mean", DType::f32, inputs.front().shape());
  if (spec.micro_dtype == DType::f32) {
    std::vector<std::span<const float>> micro;
    for (const HostTensor& t : inputs) micro.push_back(t.view<float>());
    ref::accumulate_mean(micro, mean.view<float>());
  } else {
    std::vector<std::span<const uint16_t>> micro;
    for (const HostTensor& t : inputs) micro.push_back(t.view<uint16_t>());
    ref::accumulate_mean(micro, mean.view<float>());
  }
  ReferenceResult result;
  result.outputs.push_back(std::move(mean));
  return result;
}

}  // namespace gauge::suites::optim
