// The reference side of an optim point: replay its run (run_spec.h) on the host with the reference
// optimizer (reference/optim/optimizers.h), in the fp64-math truth and, for bf16 precisions, in the
// faithful fp32 math beside it.
#pragma once

#include <vector>

#include "harness/case.h"
#include "harness/tensor.h"
#include "reference/optim/optimizers.h"
#include "suites/optim/run_spec.h"

namespace gauge::suites::optim {

// Steps 1..T from `inputs` (input_index order) with the given math; returns the stored tensors in
// output_index order. With T > 1 every step's gradient is generated into `gradient_buffer` (a flat
// tensor in the gradient format); a one-step run reads the input gradient and needs none.
std::vector<HostTensor> replay(const RunSpec& spec, const std::vector<HostTensor>& inputs,
                               gauge::reference::optim::Math math, HostTensor* gradient_buffer);

// The reference of a point: outputs = the fp64-math truth; faithful = the fp32-math replay (bf16
// precisions only). Allocates exactly what cost_model(spec).predicted_host_peak_bytes counts beyond
// the inputs: the outputs, and one gradient buffer shared by both replays when T > 1.
ReferenceResult reference_run(const RunSpec& spec, const std::vector<HostTensor>& inputs);

// The reference of a gradient accumulation point: reference::optim::accumulate_mean over the flat
// buffers (the gaps are zero, and so is their mean).
ReferenceResult accumulation_reference(const AccumulationSpec& spec, const std::vector<HostTensor>& inputs);

}  // namespace gauge::suites::optim
