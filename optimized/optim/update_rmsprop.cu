// RMSprop (alpha, eps, momentum, centered, coupled weight decay) update kernels. Per element,
// torch.optim.RMSprop:
//   g = scale g; g += wd p; sq = alpha sq + (1 - alpha) g^2;
//   centered: ga = alpha ga + (1 - alpha) g, avg = sqrt(sq - ga^2) + eps; else avg = sqrt(sq) + eps;
//   momentum > 0: buf = momentum buf + g / avg, p -= lr buf; else p -= lr g / avg.
// sq - ga^2 is evaluated as two separately rounded operations (no FMA), the way a plain fp32 CPU
// evaluation does it, since it cancels when the gradient is nearly constant.
// Bytes per parameter: fp32 20 + 8 per extra state (momentum, centered); bf16_stochastic half.
#include "optimized/optim/multi_tensor_device.cuh"

namespace gauge::optimized::optim::detail {
namespace {

struct RmspropOp {
  template <int N, class IoT>
  __device__ __forceinline__ static void apply(const IoT& io, int64_t i, const StepScalars& s, float scale) {
    float p[N];
    float g[N];
    float sq[N];
    float ga[N] = {};
    float buf[N] = {};
    // Every load before any store: the arrays are distinct, but the compiler cannot know that.
    io.template load_param<N>(i, p);
    io.template load_grad<N>(i, g);
    io.template load_state<N>(0, i, sq);
    if (s.centered != 0) io.template load_state<N>(s.grad_avg_slot, i, ga);
    if (s.use_momentum != 0) io.template load_state<N>(s.momentum_slot, i, buf);
#pragma unroll
    for (int k = 0; k < N; ++k) g[k] *= scale;
    if (s.use_weight_decay != 0) {
#pragma unroll
      for (int k = 0; k < N; ++k) g[k] = fmaf(s.weight_decay, p[k], g[k]);
    }
    float avg[N];
#pragma unroll
    for (int k = 0; k < N; ++k) sq[k] = fmaf(s.alpha, sq[k], s.one_minus_alpha * (g[k] * g[k]));
    io.template store_state<N>(0, i, sq);
    if (s.centered != 0) {
#pragma unroll
      for (int k = 0; k < N; ++k) {
        ga[k] = fmaf(s.alpha, ga[k], s.one_minus_alpha * g[k]);
        avg[k] = sqrtf(__fsub_rn(sq[k], __fmul_rn(ga[k], ga[k]))) + s.eps;
      }
      io.template store_state<N>(s.grad_avg_slot, i, ga);
    } else {
#pragma unroll
      for (int k = 0; k < N; ++k) avg[k] = sqrtf(sq[k]) + s.eps;
    }
    if (s.use_momentum != 0) {
#pragma unroll
      for (int k = 0; k < N; ++k) {
        buf[k] = fmaf(s.momentum, buf[k], g[k] / avg[k]);
        p[k] = fmaf(-s.lr, buf[k], p[k]);
      }
      io.template store_state<N>(s.momentum_slot, i, buf);
    } else {
#pragma unroll
      for (int k = 0; k < N; ++k) p[k] = fmaf(-s.lr, g[k] / avg[k], p[k]);
    }
    io.template store_param<N>(i, p);
  }
};

}  // namespace

void launch_update_rmsprop(Precision precision, const UpdateArgs& args, StreamHandle stream) {
  launch_update_for<RmspropOp>(precision, args, stream);
}

}  // namespace gauge::optimized::optim::detail
