// SGD (momentum, dampening, nesterov, coupled weight decay) update kernels: fp32, bf16 + fp32 master,
// bf16 with stochastic rounding. Per element, torch.optim.SGD:
//   g = scale g; g += wd p; buf = g (step 1) | momentum buf + (1 - dampening) g; g = nesterov ?
//   g + momentum buf : buf; p -= lr g.
// Bytes per parameter (read + written): fp32 no momentum 4+4+4 = 12, with momentum 20 (16 at step 1);
// bf16_master 2+4+4+2 = 12 (+8 with momentum); bf16_stochastic 2+2+2 = 6 (+4 with momentum).
#include "optimized/optim/multi_tensor_device.cuh"

namespace gauge::optimized::optim::detail {
namespace {

struct SgdOp {
  // The counted kernel runs one loop per value of first_step (multi_tensor_device.cuh).
  static constexpr bool kSwitchesOnFirstStep = true;

  template <int N, class IoT>
  __device__ __forceinline__ static void apply(const IoT& io, int64_t i, const StepScalars& s, float scale) {
    float p[N];
    float g[N];
    float buf[N] = {};
    // Every load before any store: the arrays are distinct, but the compiler cannot know that.
    io.template load_param<N>(i, p);
    io.template load_grad<N>(i, g);
    const bool read_buffer = s.use_momentum != 0 && s.first_step == 0;
    if (read_buffer) io.template load_state<N>(0, i, buf);
#pragma unroll
    for (int k = 0; k < N; ++k) g[k] *= scale;
    if (s.use_weight_decay != 0) {
#pragma unroll
      for (int k = 0; k < N; ++k) g[k] = fmaf(s.weight_decay, p[k], g[k]);
    }
    if (s.use_momentum != 0) {
      if (read_buffer) {
#pragma unroll
        for (int k = 0; k < N; ++k) buf[k] = fmaf(s.momentum, buf[k], s.dampening_complement * g[k]);
      } else {
#pragma unroll
        for (int k = 0; k < N; ++k) buf[k] = g[k];
      }
      io.template store_state<N>(0, i, buf);
      if (s.nesterov != 0) {
#pragma unroll
        for (int k = 0; k < N; ++k) g[k] = fmaf(s.momentum, buf[k], g[k]);
      } else {
#pragma unroll
        for (int k = 0; k < N; ++k) g[k] = buf[k];
      }
    }
#pragma unroll
    for (int k = 0; k < N; ++k) p[k] = fmaf(-s.lr, g[k], p[k]);
    io.template store_param<N>(i, p);
  }
};

}  // namespace

void launch_update_sgd(Precision precision, const UpdateArgs& args, StreamHandle stream) {
  launch_update_for<SgdOp>(precision, args, stream);
}

}  // namespace gauge::optimized::optim::detail
