// AdaGrad (lr_decay, eps, coupled weight decay) update kernels. Per element, torch.optim.Adagrad:
//   g = scale g; g += wd p; sum += g^2; p -= clr g / (sqrt(sum) + eps), clr = lr / (1 + (t - 1) lr_decay).
// (initial_accumulator_value only sets the state before step 1: StepPlan::initialize_state.)
// Bytes per parameter: fp32 p, g, sum read + p, sum written = 20; bf16_master 2+4+4 read + 4+4+2
// written = 20; bf16_stochastic 2+2+2 + 2+2 = 10.
#include "optimized/optim/multi_tensor_device.cuh"

namespace gauge::optimized::optim::detail {
namespace {

struct AdagradOp {
  template <int N, class IoT>
  __device__ __forceinline__ static void apply(const IoT& io, int64_t i, const StepScalars& s, float scale) {
    float p[N];
    float g[N];
    float sum[N];
    io.template load_param<N>(i, p);
    io.template load_grad<N>(i, g);
    io.template load_state<N>(0, i, sum);
#pragma unroll
    for (int k = 0; k < N; ++k) g[k] *= scale;
    if (s.use_weight_decay != 0) {
#pragma unroll
      for (int k = 0; k < N; ++k) g[k] = fmaf(s.weight_decay, p[k], g[k]);
    }
#pragma unroll
    for (int k = 0; k < N; ++k) {
      sum[k] = fmaf(g[k], g[k], sum[k]);
      const float std_dev = sqrtf(sum[k]) + s.eps;
      p[k] = fmaf(-s.clr, g[k] / std_dev, p[k]);
    }
    io.template store_state<N>(0, i, sum);
    io.template store_param<N>(i, p);
  }
};

}  // namespace

void launch_update_adagrad(Precision precision, const UpdateArgs& args, StreamHandle stream) {
  launch_update_for<AdagradOp>(precision, args, stream);
}

}  // namespace gauge::optimized::optim::detail
