// How one case point of the optim suite maps to a multi-step optimizer run, written down once for
// the reference binding, the CUDA binding and the tests. Host-side description only: no optimizer
// arithmetic lives here.
//
// A run is: a list of parameter tensors (sizes), an algorithm with its hyper-parameters, a precision,
// a learning-rate schedule, step options, and a number of steps T. It starts from the input tensors
// and applies steps t = 1..T; the outputs are the final parameters and states.
//
// Flat buffers. Every per-element quantity (parameters, master weights, each state, the gradient) is
// one flat tensor holding every parameter tensor back to back, tensor i at element offset
// offsets[i], a multiple of kAlignElements (so each tensor starts 256-byte aligned in a bf16 buffer
// and 512-byte aligned in an fp32 one, as PyTorch's allocator aligns real tensors); the gaps are zero
// in every input and stay zero. The CUDA binding points the entries of its TensorList into these
// buffers; the reference views them as spans.
//
// Inputs, in this order (see InputIndex):
//   params       f32 (fp32) or bf16: the initial parameters
//   master       f32, bf16_master only: the initial master weights
//   <state k>    one per state, in gauge::optim::state_names order, format of the precision's states:
//                zeros, or AdaGrad's initial_accumulator_value
//   grad         f32 (fp32) or bf16: the gradient of step 1
//   grad_staging f32, bf16 precisions with T > 1 only: zeros; device scratch for regenerating
//                gradients (the CUDA binding fills fp32 there, then casts to bf16 into `grad`)
// Outputs, in this order: params, [master], <state k>...; for bf16 precisions the reference gives the
// fp64-math truth as outputs and the faithful fp32-math reference beside it (the faithful rule).
//
// Values, from the counter-based RNG (harness/philox.h):
//   initial value of element j of tensor i, keyed by the harness seed (they travel as inputs):
//     v = gauge::rng::uniform_at(seed, value_tensor_id(0, i), j, -1, 1)
//     fp32: params = v;  bf16_master: master = v, params = RNE bf16 of v;  bf16_stochastic: params = RNE bf16 of v
//   gradient of step t, element j of tensor i, keyed by the suite's constant kGradientSeed:
//     g = gauge::rng::uniform_at(kGradientSeed, value_tensor_id(t, i), j, -grad_scale, grad_scale)
//     fp32: g;  bf16 precisions: RNE bf16 of g.
//   (Not the harness seed: neither the reference function nor the CUDA binding is given it, and the
//   binding, which sees only device inputs, must launch the fills without reading device memory.)
// So 100 steps need no stored gradients: the CUDA binding regenerates step t's gradient on the device
// with gauge::gpu::fill_uniform (the same words, bit for bit) and, for bf16, the CUDA RNE cast
// gauge::optimized::precision::cast_f32_to_bf16 (bit-exact against the reference cast). Step 1's
// gradient is also an input, so a one-step point (the benchmarks) generates nothing on the device.
// The learning rate of step t is reference::optim::scheduled_lr(hyper.lr, schedule, t), computed on
// the host and passed to both sides.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "harness/case.h"
#include "harness/dtype.h"
#include "harness/tensor.h"
#include "reference/optim/config.h"

namespace gauge::suites::optim {

using gauge::optim::Algorithm;
using gauge::optim::Hyper;
using gauge::optim::Precision;
using gauge::optim::Schedule;
using gauge::optim::StepOptions;

inline constexpr int64_t kAlignElements = 128;
inline constexpr uint32_t kMaxTensors = 4096;  // value_tensor_id numbering: steps * kMaxTensors + tensor
inline constexpr uint64_t kGradientSeed = 0x6f7074696dull;  // "optim"

// Tensor lists the points name by their "list" dimension.
enum class TensorListId : int64_t {
  ragged = 0,        // 1, 3, 1000, 2^20 + 7, 4097, 65535, 17: ~1.1e6 parameters, every tail length
  ragged_small = 1,  // 1, 3, 1000, 4097, 31: ~5e3 parameters, one-step runs in ctest
  transformer = 2,   // a Llama-shaped stack scaled to ~1.1e8 parameters (see tensor_sizes)
  ragged_tiny = 3,   // 1, 3, 7, 1000, 33: ~1e3 parameters, 100-step runs in ctest
  llama7b_slice = 4,  // Llama-2-7B's own tensor shapes, embedding + 4 of its 32 layers: ~9.4e8 parameters
};
std::vector<int64_t> tensor_sizes(TensorListId list);
std::string tensor_list_name(TensorListId list);

// The Philox tensor id of the values of step `step` (0: initial values) of parameter tensor `tensor`.
uint32_t value_tensor_id(int64_t step, size_t tensor);

struct Layout {
  std::vector<int64_t> sizes;
  std::vector<int64_t> offsets;  // element offset of tensor i in every flat buffer
  int64_t flat_length = 0;       // elements of every flat buffer, gaps included
  int64_t parameters = 0;        // sum of sizes
};
Layout make_layout(const std::vector<int64_t>& sizes);

// Everything one point replays.
struct RunSpec {
  Precision precision = Precision::fp32;
  Hyper hyper;
  Schedule schedule;
  StepOptions options;
  std::vector<int64_t> sizes;
  int64_t steps = 1;
  float grad_scale = 1.0f;  // gradients uniform in [-grad_scale, grad_scale)
};

// A case's fixed part; each point adds the tensor list and the step count.
struct CaseConfig {
  std::string name;
  std::string description;
  Precision precision = Precision::fp32;
  Hyper hyper;
  Schedule schedule;
  StepOptions options;
  float grad_scale = 1.0f;
  std::vector<ShapeSpec> shapes;
};
RunSpec run_spec(const CaseConfig& config, const Point& point);

// The declared cases' configurations, in registration order (cases.cc), and one by name (UsageError
// when there is none).
const std::vector<CaseConfig>& case_configs();
const CaseConfig& case_config(const std::string& name);

DType param_dtype(Precision p);  // also the gradient's
DType state_dtype(Precision p);
DType point_dtype(Precision p);  // the dtype a point carries: f32 for fp32, bf16 otherwise

struct InputIndex {
  size_t params = 0;
  std::optional<size_t> master;
  size_t first_state = 0;
  int states = 0;
  size_t grad = 0;
  std::optional<size_t> grad_staging;
  size_t count = 0;
};
InputIndex input_index(const RunSpec& spec);

struct OutputIndex {
  size_t params = 0;
  std::optional<size_t> master;
  size_t first_state = 0;
  int states = 0;
  size_t count = 0;
};
OutputIndex output_index(const RunSpec& spec);

// Initial values keyed by the harness seed `seed`; step 1's gradient by kGradientSeed.
std::vector<HostTensor> make_inputs(const RunSpec& spec, uint64_t seed);
// Writes step t's gradient into `grad` (a flat tensor in the parameter format); the gaps are left alone.
void fill_gradient(const RunSpec& spec, const Layout& layout, int64_t step, HostTensor& grad);

// Bytes per parameter that one step must read and write (e.g. AdamW fp32: p, g, m, v read, p, m, v
// written: 28), optimizer-state bytes per parameter (the states, plus the fp32 master where used),
// and the FLOPs of one step per parameter (the update as written in reference/optim/optimizers.h,
// each add, multiply, divide, square root, max counted as one; clipping adds its square, add and scale).
double step_bytes_per_parameter(const RunSpec& spec);
int64_t state_bytes_per_parameter(const Hyper& hyper, Precision precision);
double step_flops_per_parameter(const RunSpec& spec);

// The cost of one timed optimized call: regenerating gradients (T > 1) and T steps (the outputs are
// set from the inputs by the untimed CaseDecl::prepare); and the predicted peaks of the reference (inputs, truth outputs, faithful
// outputs, one gradient buffer when T > 1) and of the device (inputs and outputs; the StepPlan's own
// scratch is not known here).
CostModel cost_model(const RunSpec& spec);

// Hyper-parameters and the run description, for CaseDecl::params (exported with the vectors).
Params run_params(const RunSpec& spec);

// ---- Gradient accumulation cases -----------------------------------------------------------------
// k micro-batch gradients of a tensor list -> their mean. Inputs micro_0 .. micro_{k-1}: flat buffers
// like the optimizer's, in the point's dtype (f32, or bf16 = RNE of the fp32 draw), values
// gauge::rng::uniform_at(seed, value_tensor_id(j + 1, i), element, -1, 1) for micro-batch j (harness
// seed). Output "mean": fp32, gaps zero. Points carry "list" and "micro_batches".
struct AccumulationSpec {
  DType micro_dtype = DType::f32;
  std::vector<int64_t> sizes;
  int micro_batches = 1;
};
AccumulationSpec accumulation_spec(const Point& point);
std::vector<HostTensor> make_accumulation_inputs(const AccumulationSpec& spec, uint64_t seed);
// Micro-batches read once, the fp32 accumulator written by the first and read and written by every
// later one (the per-micro-batch pattern of training, which cannot wait for all k), the output
// zeroed once (gaps included).
CostModel accumulation_cost_model(const AccumulationSpec& spec);

}  // namespace gauge::suites::optim
