// Adam (coupled L2, amsgrad) and AdamW (decoupled weight decay) update kernels: one template, AdamW
// is a launch-uniform switch. Per element, torch.optim.Adam / AdamW (non-fused, non-capturable):
//   g = scale g; AdamW: p *= 1 - lr wd | Adam: g += wd p;
//   m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2; amsgrad: vmax = max(vmax, v), used for v;
//   p -= step_size m / (sqrt(v) / bc2_sqrt + eps), step_size = lr / (1 - b1^t), bc2_sqrt = sqrt(1 - b2^t).
// Bytes per parameter: fp32 read p, g, m, v + write p, m, v = 28 (36 with amsgrad);
// bf16_master read p-master 4, g 2, m 4, v 4 + write master 4, p 2, m 4, v 4 = 28 (36);
// bf16_stochastic read p, g, m, v + write p, m, v, 2 bytes each = 14 (18).
#include "optimized/optim/multi_tensor_device.cuh"

namespace gauge::optimized::optim::detail {
namespace {

struct AdamOp {
  template <int N, class IoT>
  __device__ __forceinline__ static void apply(const IoT& io, int64_t i, const StepScalars& s, float scale) {
    float p[N];
    float g[N];
    float m[N];
    float v[N];
    float vmax[N] = {};
    // Every load before any store: the arrays are distinct, but the compiler cannot know that.
    io.template load_param<N>(i, p);
    io.template load_grad<N>(i, g);
    io.template load_state<N>(0, i, m);
    io.template load_state<N>(1, i, v);
    if (s.amsgrad != 0) io.template load_state<N>(2, i, vmax);
#pragma unroll
    for (int k = 0; k < N; ++k) g[k] *= scale;
    if (s.use_weight_decay != 0) {
      if (s.decoupled != 0) {
#pragma unroll
        for (int k = 0; k < N; ++k) p[k] *= s.decay_factor;
      } else {
#pragma unroll
        for (int k = 0; k < N; ++k) g[k] = fmaf(s.weight_decay, p[k], g[k]);
      }
    }
#pragma unroll
    for (int k = 0; k < N; ++k) {
      m[k] = fmaf(s.beta1, m[k], s.one_minus_beta1 * g[k]);
      v[k] = fmaf(s.beta2, v[k], s.one_minus_beta2 * (g[k] * g[k]));
    }
    io.template store_state<N>(0, i, m);
    io.template store_state<N>(1, i, v);
    if (s.amsgrad != 0) {
#pragma unroll
      for (int k = 0; k < N; ++k) {
        vmax[k] = nan_max(vmax[k], v[k]);
        v[k] = vmax[k];
      }
      io.template store_state<N>(2, i, vmax);
    }
#pragma unroll
    for (int k = 0; k < N; ++k) {
      const float denom = sqrtf(v[k]) / s.bc2_sqrt + s.eps;
      p[k] = fmaf(-s.step_size, m[k] / denom, p[k]);
    }
    io.template store_param<N>(i, p);
  }
};

}  // namespace

void launch_update_adam(Precision precision, const UpdateArgs& args, StreamHandle stream) {
  launch_update_for<AdamOp>(precision, args, stream);
}

}  // namespace gauge::optimized::optim::detail
