// GPU tests of the fused multi-tensor optimizer steps (optimized/optim); each one skips, with the
// reason, where no GPU can be used (always in builds without CUDA, where their bodies compile out).
//
// How a kernel is checked. Every array of every tensor lives in one device "arena" at a chosen
// offset, between guard bytes of random garbage. A step runs on the device and the same step runs on
// the host over a copy of the arena, by an emulator written from the kernels' documented operation
// order (fp32, FMA where the kernels use fmaf, IEEE sqrt and division, the same chunked norm tree),
// rounding through the reference's own functions (reference/precision/casts.h RNE,
// reference/precision/stochastic_rounding.h word and rounding). Then the whole arena is compared byte
// for byte: a wrong value, a missed element, an element updated twice, a write outside an array, or
// a skipped step that wrote anything all show up, and the stochastic rounding is bit-identical to
// the reference function on the device. Separately, the device result is compared with
// reference::optim::step (Math::fp32) within a tolerance, so the emulator cannot share a semantic
// mistake with the kernels unnoticed.
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "harness/gpu.h"
#include "harness/tests/splitmix64.h"

#if defined(GAUGE_HAS_CUDA) && GAUGE_HAS_CUDA
#include <cuda_runtime.h>

#include "harness/error.h"
#include "harness/tensor.h"
#include "optimized/optim/multi_tensor.h"
#include "optimized/optim/multi_tensor_plan.h"
#include "optimized/optim/step_scalars.h"
#include "reference/optim/config.h"
#include "reference/optim/optimizers.h"
#include "reference/precision/casts.h"
#include "reference/precision/stochastic_rounding.h"
#endif

namespace {

#if defined(GAUGE_HAS_CUDA) && GAUGE_HAS_CUDA

namespace opt = gauge::optimized::optim;
namespace plan = gauge::optimized::optim::plan;
namespace refp = gauge::reference::precision;
namespace refo = gauge::reference::optim;
using gauge::DType;
using gauge::gpu::Session;
using gauge::optim::Algorithm;
using gauge::optim::Hyper;
using gauge::optim::Precision;
using gauge::optim::StepOptions;

// ---- Small helpers ---------------------------------------------------------------------------------

using gauge::test_support::SplitMix64;

uint32_t bits_of(float x) { return std::bit_cast<uint32_t>(x); }
float float_of(uint32_t b) { return std::bit_cast<float>(b); }
float widen(uint16_t b) { return float_of(static_cast<uint32_t>(b) << 16); }

std::unique_ptr<Session> open_session() {
  auto session = Session::open();
  session->begin_case();
  return session;
}

void cuda_check(cudaError_t status, const char* what) {
  if (status != cudaSuccess) throw gauge::RuntimeFailure(std::string(what) + ": " + cudaGetErrorString(status));
}

// ---- The arena -----------------------------------------------------------------------------------

constexpr size_t kGuardBytes = 64;

struct Array {
  size_t offset = 0;  // bytes into the arena
  int bytes = 4;      // element size: 4 (fp32) or 2 (bf16)
  bool present() const { return bytes != 0; }
};

struct TensorPlace {
  int64_t n = 0;
  Array param, grad, master{0, 0};
  std::vector<Array> states;
};

// Host image and device copy of all arrays; guards and padding are random garbage.
class Arena {
 public:
  explicit Arena(uint64_t seed) : rng_(seed) {}

  // An array of n elements of `bytes` each, starting `misalign` elements past a 256-byte boundary.
  Array add(int64_t n, int bytes, int misalign) {
    const size_t start = (host_.size() + 255) / 256 * 256 + static_cast<size_t>(misalign * bytes);
    const size_t end = start + static_cast<size_t>(n) * static_cast<size_t>(bytes) + kGuardBytes;
    while (host_.size() < end) host_.push_back(static_cast<unsigned char>(rng_.next()));
    return Array{start, bytes};
  }

  float get(const Array& a, int64_t i) const {
    const size_t at = a.offset + static_cast<size_t>(i) * static_cast<size_t>(a.bytes);
    if (a.bytes == 2) {
      uint16_t b;
      std::memcpy(&b, host_.data() + at, 2);
      return widen(b);
    }
    float x;
    std::memcpy(&x, host_.data() + at, 4);
    return x;
  }
  uint16_t get_bits16(const Array& a, int64_t i) const {
    uint16_t b;
    std::memcpy(&b, host_.data() + a.offset + static_cast<size_t>(i) * 2, 2);
    return b;
  }
  void set_f32(const Array& a, int64_t i, float x) {
    std::memcpy(host_.data() + a.offset + static_cast<size_t>(i) * 4, &x, 4);
  }
  void set_bits16(const Array& a, int64_t i, uint16_t b) {
    std::memcpy(host_.data() + a.offset + static_cast<size_t>(i) * 2, &b, 2);
  }
  // Stores x in the array's format (bf16 by round to nearest even).
  void set(const Array& a, int64_t i, float x) {
    if (a.bytes == 2) {
      set_bits16(a, i, refp::f32_to_bf16(x));
    } else {
      set_f32(a, i, x);
    }
  }
  void fill(const Array& a, int64_t n, float lo, float hi) {
    for (int64_t i = 0; i < n; ++i) set(a, i, rng_.uniform(lo, hi));
  }

  std::vector<unsigned char>& host() { return host_; }
  const std::vector<unsigned char>& host() const { return host_; }

  // Uploads the host image (a fresh device buffer; pointers change).
  void upload(Session& session) {
    gauge::HostTensor t("arena", DType::u8, {static_cast<int64_t>(host_.size())});
    std::memcpy(t.data(), host_.data(), host_.size());
    device_ = session.upload(t);
  }
  // Rewrites bytes [offset, offset + bytes) of the device copy from the host image, in place.
  void push(Session& session, size_t offset, size_t bytes) {
    cuda_check(cudaMemcpyAsync(static_cast<unsigned char*>(device_.ptr) + offset, host_.data() + offset, bytes,
                               cudaMemcpyHostToDevice, session.stream()),
               "arena push");
    session.synchronize();
  }
  std::vector<unsigned char> download(Session& session) const {
    const gauge::HostTensor t = session.download(device_);
    const auto* p = static_cast<const unsigned char*>(t.data());
    return std::vector<unsigned char>(p, p + t.size_bytes());
  }
  void* device(const Array& a) const {
    return a.present() ? static_cast<unsigned char*>(device_.ptr) + a.offset : nullptr;
  }
  uintptr_t address(const Array& a) const { return reinterpret_cast<uintptr_t>(device(a)); }

 private:
  SplitMix64 rng_;
  std::vector<unsigned char> host_;
  gauge::DeviceTensor device_;
};

// Where byte `b` lies, for failure messages.
std::string locate(const std::vector<TensorPlace>& tensors, size_t b) {
  const auto in = [&](const Array& a, int64_t n) {
    return a.present() && b >= a.offset && b < a.offset + static_cast<size_t>(n) * static_cast<size_t>(a.bytes);
  };
  for (size_t t = 0; t < tensors.size(); ++t) {
    const TensorPlace& p = tensors[t];
    const auto element = [&](const Array& a) { return std::to_string((b - a.offset) / static_cast<size_t>(a.bytes)); };
    if (in(p.param, p.n)) return "tensor " + std::to_string(t) + " param[" + element(p.param) + "]";
    if (in(p.grad, p.n)) return "tensor " + std::to_string(t) + " grad[" + element(p.grad) + "]";
    if (in(p.master, p.n)) return "tensor " + std::to_string(t) + " master[" + element(p.master) + "]";
    for (size_t k = 0; k < p.states.size(); ++k) {
      if (in(p.states[k], p.n)) return "tensor " + std::to_string(t) + " state" + std::to_string(k) + "[" + element(p.states[k]) + "]";
    }
  }
  return "a guard or padding byte";
}

// Byte-for-byte equality, except (when nan_equivalent) that two NaNs of an array's format match
// whatever their payloads (host and device produce different NaN bits).
void expect_same_arena(const std::vector<unsigned char>& want, const std::vector<unsigned char>& got,
                       const std::vector<TensorPlace>& tensors, const std::string& what, bool nan_equivalent = false) {
  ASSERT_EQ(want.size(), got.size());
  int shown = 0;
  int64_t mismatches = 0;
  std::string lines;
  for (size_t b = 0; b < want.size(); ++b) {
    if (want[b] == got[b]) continue;
    if (nan_equivalent) {
      // Find the element holding b, if any, and compare it as a float.
      bool both_nan = false;
      for (const TensorPlace& p : tensors) {
        for (const Array* a : {&p.param, &p.master, &p.grad}) {
          if (a->present() && b >= a->offset && b < a->offset + static_cast<size_t>(p.n) * static_cast<size_t>(a->bytes)) {
            const size_t start = a->offset + (b - a->offset) / static_cast<size_t>(a->bytes) * static_cast<size_t>(a->bytes);
            uint32_t w = 0, g = 0;
            std::memcpy(&w, want.data() + start, static_cast<size_t>(a->bytes));
            std::memcpy(&g, got.data() + start, static_cast<size_t>(a->bytes));
            both_nan = a->bytes == 2 ? (std::isnan(widen(static_cast<uint16_t>(w))) && std::isnan(widen(static_cast<uint16_t>(g))))
                                     : (std::isnan(float_of(w)) && std::isnan(float_of(g)));
          }
        }
        for (const Array& a : p.states) {
          if (b >= a.offset && b < a.offset + static_cast<size_t>(p.n) * static_cast<size_t>(a.bytes)) {
            const size_t start = a.offset + (b - a.offset) / static_cast<size_t>(a.bytes) * static_cast<size_t>(a.bytes);
            uint32_t w = 0, g = 0;
            std::memcpy(&w, want.data() + start, static_cast<size_t>(a.bytes));
            std::memcpy(&g, got.data() + start, static_cast<size_t>(a.bytes));
            both_nan = a.bytes == 2 ? (std::isnan(widen(static_cast<uint16_t>(w))) && std::isnan(widen(static_cast<uint16_t>(g))))
                                    : (std::isnan(float_of(w)) && std::isnan(float_of(g)));
          }
        }
      }
      if (both_nan) continue;
    }
    ++mismatches;
    if (shown++ < 12) {
      lines += "\n  byte " + std::to_string(b) + " (" + locate(tensors, b) + "): expected " + std::to_string(want[b]) +
               " got " + std::to_string(got[b]);
    }
  }
  EXPECT_EQ(mismatches, 0) << what << ": " << mismatches << " bytes differ" << lines;
}

// ---- A tensor list in the arena ------------------------------------------------------------------

struct ListSpec {
  Precision precision = Precision::fp32;
  Hyper hyper;
  std::vector<int64_t> sizes;
  // Element misalignment of each array kind (param, grad, master, state k), applied to every tensor;
  // tensor t additionally shifts every array by shift_per_tensor * t elements.
  int param_misalign = 0, grad_misalign = 0, master_misalign = 0, state_misalign = 0;
  int shift_per_tensor = 0;
};

struct List {
  ListSpec spec;
  std::vector<TensorPlace> tensors;
  Arena arena{0};
  int state_count = 0;
};

// Values: params in [-1, 1); grads in [-1, 1); states valid for their algorithm (non-negative second
// moments, RMSprop's grad_avg small enough that square_avg - grad_avg^2 stays positive).
void fill_states(List& l, const TensorPlace& p) {
  const opt::StateIndex s = opt::state_index(l.spec.hyper);
  for (int k = 0; k < s.count; ++k) {
    std::pair<float, float> range{-0.1f, 0.1f};  // momentum buffers, exp_avg, grad_avg
    if (k == s.sum) range = {0.0f, 1.0f};
    if (k == s.square_avg) range = {0.5f, 1.0f};
    if (k == s.exp_avg_sq) range = {0.0f, 0.01f};
    if (k == s.max_exp_avg_sq) range = {0.0f, 0.02f};
    l.arena.fill(p.states[static_cast<size_t>(k)], p.n, range.first, range.second);
  }
}

List make_list(const ListSpec& spec, uint64_t seed) {
  List l;
  l.spec = spec;
  l.arena = Arena(seed);
  l.state_count = opt::state_index(spec.hyper).count;
  const bool bf16 = spec.precision != Precision::fp32;
  const int pbytes = bf16 ? 2 : 4;
  const int sbytes = spec.precision == Precision::bf16_stochastic ? 2 : 4;
  for (size_t t = 0; t < spec.sizes.size(); ++t) {
    const int shift = spec.shift_per_tensor * static_cast<int>(t);
    TensorPlace p;
    p.n = spec.sizes[t];
    p.param = l.arena.add(p.n, pbytes, spec.param_misalign + shift);
    p.grad = l.arena.add(p.n, pbytes, spec.grad_misalign + shift);
    if (spec.precision == Precision::bf16_master) p.master = l.arena.add(p.n, 4, spec.master_misalign + shift);
    for (int k = 0; k < l.state_count; ++k) p.states.push_back(l.arena.add(p.n, sbytes, spec.state_misalign + shift));
    l.tensors.push_back(p);
  }
  for (TensorPlace& p : l.tensors) {
    l.arena.fill(p.grad, p.n, -1.0f, 1.0f);
    if (spec.precision == Precision::bf16_master) {
      // The master is the truth; the bf16 param its RNE cast (as the reference keeps them).
      l.arena.fill(p.master, p.n, -1.0f, 1.0f);
      for (int64_t i = 0; i < p.n; ++i) l.arena.set_bits16(p.param, i, refp::f32_to_bf16(l.arena.get(p.master, i)));
    } else {
      l.arena.fill(p.param, p.n, -1.0f, 1.0f);
    }
    fill_states(l, p);
  }
  return l;
}

opt::TensorList device_list(const List& l) {
  opt::TensorList d;
  d.states.resize(static_cast<size_t>(l.state_count));
  for (const TensorPlace& p : l.tensors) {
    d.params.push_back(l.arena.device(p.param));
    d.grads.push_back(l.arena.device(p.grad));
    if (l.spec.precision == Precision::bf16_master) d.master.push_back(static_cast<float*>(l.arena.device(p.master)));
    for (int k = 0; k < l.state_count; ++k) d.states[static_cast<size_t>(k)].push_back(l.arena.device(p.states[static_cast<size_t>(k)]));
    d.sizes.push_back(p.n);
  }
  return d;
}

opt::StepPlan build_plan(Session& session, const List& l) {
  return opt::StepPlan(device_list(l), l.spec.precision, l.spec.hyper,
                       [&session](size_t bytes) { return session.workspace(bytes); }, session.stream());
}

// ---- The emulator ----------------------------------------------------------------------------------

float nan_max(float a, float b) { return (std::isnan(a) || std::isnan(b)) ? a + b : std::fmax(a, b); }

// The kernels' block_sum: a 32-lane xor butterfly per warp, then one over the 8 warp sums.
float block_sum(const std::vector<float>& x) {
  float warps[plan::kWarpsPerBlock];
  for (int w = 0; w < plan::kWarpsPerBlock; ++w) {
    float lanes[32];
    for (int i = 0; i < 32; ++i) lanes[i] = x[static_cast<size_t>(32 * w + i)];
    for (int o = 16; o > 0; o >>= 1) {
      float next[32];
      for (int i = 0; i < 32; ++i) next[i] = lanes[i] + lanes[i ^ o];
      std::copy(next, next + 32, lanes);
    }
    warps[w] = lanes[0];
  }
  float y[32] = {};
  for (int w = 0; w < plan::kWarpsPerBlock; ++w) y[w] = warps[w];
  for (int o = plan::kWarpsPerBlock / 2; o > 0; o >>= 1) {
    float next[32];
    for (int i = 0; i < 32; ++i) next[i] = y[i] + y[i ^ o];
    std::copy(next, next + 32, y);
  }
  return y[0];
}

struct NormResult {
  float total = 0;
  bool nonfinite = false;
};

// The vector starts the plan derives from the device addresses of every array a step touches.
std::vector<int64_t> vector_starts(const List& l) {
  std::vector<int64_t> starts;
  for (const TensorPlace& p : l.tensors) {
    std::vector<plan::ArrayRef> refs = {{l.arena.address(p.param), p.param.bytes}, {l.arena.address(p.grad), p.grad.bytes}};
    if (p.master.present()) refs.push_back({l.arena.address(p.master), 4});
    for (const Array& s : p.states) refs.push_back({l.arena.address(s), s.bytes});
    starts.push_back(plan::tensor_vector_start(p.n, refs));
  }
  return starts;
}

NormResult emulate_norm(const List& l) {
  const int width = l.spec.precision == Precision::fp32 ? plan::vector_width(4) : plan::vector_width(2);
  const std::vector<int64_t> starts = vector_starts(l);
  const std::vector<plan::Chunk> chunks = plan::build_chunk_table(l.spec.sizes, starts);
  std::vector<float> partials;
  bool nonfinite = false;
  std::vector<float> sums(plan::kThreadsPerBlock);
  for (const plan::Chunk& c : chunks) {
    const TensorPlace& p = l.tensors[c.tensor];
    const plan::ChunkSplit split = plan::split_chunk(c.begin, c.count, starts[c.tensor], width);
    for (int t = 0; t < plan::kThreadsPerBlock; ++t) {
      float s = 0.0f;
      const auto add = [&](int64_t i) {
        const float g = l.arena.get(p.grad, i);
        s = std::fmaf(g, g, s);
        nonfinite = nonfinite || !(std::fabs(g) <= FLT_MAX);
      };
      for (int64_t v = t; v < split.vectors; v += plan::kThreadsPerBlock) {
        for (int k = 0; k < width; ++k) add(split.vector_first(v) + k);
      }
      for (int64_t j = t; j < split.scalar_count(); j += plan::kThreadsPerBlock) add(split.scalar_index(j));
      sums[static_cast<size_t>(t)] = s;
    }
    partials.push_back(block_sum(sums));
  }
  for (int t = 0; t < plan::kThreadsPerBlock; ++t) {
    float part = 0.0f;
    for (size_t c = static_cast<size_t>(t); c < partials.size(); c += plan::kThreadsPerBlock) part += partials[c];
    sums[static_cast<size_t>(t)] = part;
  }
  return NormResult{block_sum(sums), nonfinite};
}

struct StepOutcome {
  bool ran_norm = false;
  int status = 0;
  float norm = 0;
};

// One element, in the kernels' operation order (update_*.cu).
void emulate_element(List& l, size_t tensor, int64_t i, const opt::StepScalars& s, float scale, int64_t step, uint64_t seed) {
  const TensorPlace& tp = l.tensors[tensor];
  Arena& a = l.arena;
  const Precision precision = l.spec.precision;
  float p = precision == Precision::bf16_master ? a.get(tp.master, i) : a.get(tp.param, i);
  float g = a.get(tp.grad, i);
  float st[3] = {0, 0, 0};
  for (int k = 0; k < l.state_count; ++k) st[k] = a.get(tp.states[static_cast<size_t>(k)], i);

  g = g * scale;
  switch (l.spec.hyper.algorithm) {
    case Algorithm::sgd: {
      if (s.use_weight_decay) g = std::fmaf(s.weight_decay, p, g);
      if (s.use_momentum) {
        st[0] = s.first_step ? g : std::fmaf(s.momentum, st[0], s.dampening_complement * g);
        g = s.nesterov ? std::fmaf(s.momentum, st[0], g) : st[0];
      }
      p = std::fmaf(-s.lr, g, p);
      break;
    }
    case Algorithm::adagrad: {
      if (s.use_weight_decay) g = std::fmaf(s.weight_decay, p, g);
      st[0] = std::fmaf(g, g, st[0]);
      const float std_dev = std::sqrt(st[0]) + s.eps;
      p = std::fmaf(-s.clr, g / std_dev, p);
      break;
    }
    case Algorithm::rmsprop: {
      if (s.use_weight_decay) g = std::fmaf(s.weight_decay, p, g);
      st[0] = std::fmaf(s.alpha, st[0], s.one_minus_alpha * (g * g));
      float avg;
      if (s.centered) {
        float& ga = st[s.grad_avg_slot];
        ga = std::fmaf(s.alpha, ga, s.one_minus_alpha * g);
        avg = std::sqrt(st[0] - ga * ga) + s.eps;
      } else {
        avg = std::sqrt(st[0]) + s.eps;
      }
      if (s.use_momentum) {
        float& buf = st[s.momentum_slot];
        buf = std::fmaf(s.momentum, buf, g / avg);
        p = std::fmaf(-s.lr, buf, p);
      } else {
        p = std::fmaf(-s.lr, g / avg, p);
      }
      break;
    }
    case Algorithm::adam:
    case Algorithm::adamw: {
      if (s.use_weight_decay) {
        if (s.decoupled) {
          p = p * s.decay_factor;
        } else {
          g = std::fmaf(s.weight_decay, p, g);
        }
      }
      st[0] = std::fmaf(s.beta1, st[0], s.one_minus_beta1 * g);
      st[1] = std::fmaf(s.beta2, st[1], s.one_minus_beta2 * (g * g));
      float v = st[1];
      if (s.amsgrad) {
        st[2] = nan_max(st[2], st[1]);
        v = st[2];
      }
      const float denom = std::sqrt(v) / s.bc2_sqrt + s.eps;
      p = std::fmaf(-s.step_size, st[0] / denom, p);
      break;
    }
  }

  const auto t32 = static_cast<uint32_t>(tensor);
  const auto word = [&](uint32_t slot) {
    return refp::stochastic_rounding_word(seed, gauge::optim::stochastic_rounding_tensor_id(t32, slot), static_cast<uint64_t>(i),
                                          static_cast<uint64_t>(step));
  };
  switch (precision) {
    case Precision::fp32:
      a.set_f32(tp.param, i, p);
      break;
    case Precision::bf16_master:
      a.set_f32(tp.master, i, p);
      a.set_bits16(tp.param, i, refp::f32_to_bf16(p));
      break;
    case Precision::bf16_stochastic:
      a.set_bits16(tp.param, i, refp::f32_to_bf16_stochastic(p, word(0)));
      break;
  }
  for (int k = 0; k < l.state_count; ++k) {
    const Array& arr = tp.states[static_cast<size_t>(k)];
    if (precision == Precision::bf16_stochastic) {
      a.set_bits16(arr, i, refp::f32_to_bf16_stochastic(st[k], word(1 + static_cast<uint32_t>(k))));
    } else {
      a.set_f32(arr, i, st[k]);
    }
  }
}

StepOutcome emulate_step(List& l, int64_t step, double lr, const StepOptions& options, bool want_norm) {
  StepOutcome out;
  float scale = 1.0f;
  if (opt::StepPlan::needs_norm_pass(options, want_norm ? &out.norm : nullptr)) {
    out.ran_norm = true;
    const NormResult r = emulate_norm(l);
    out.norm = std::sqrt(r.total);
    if (options.max_grad_norm > 0.0) {
      const float coef = static_cast<float>(options.max_grad_norm) / (out.norm + 1e-6f);
      if (!(coef >= 1.0f)) scale = coef;
    }
    if (r.nonfinite && !options.allow_nonfinite) {
      out.status = 1;
      return out;
    }
  }
  const opt::StepScalars s = opt::step_scalars(l.spec.hyper, step, lr);
  for (size_t t = 0; t < l.tensors.size(); ++t) {
    for (int64_t i = 0; i < l.tensors[t].n; ++i) emulate_element(l, t, i, s, scale, step, options.seed);
  }
  return out;
}

// ---- Running a step on the device -----------------------------------------------------------------

// Status and norm in a little device buffer of their own, pre-filled with 7 and NaN bits.
struct Outputs {
  gauge::DeviceTensor device;
  explicit Outputs(Session& session) {
    gauge::HostTensor t("outputs", DType::u32, {2});
    t.view<uint32_t>()[0] = 7;
    t.view<uint32_t>()[1] = 0xFFFFFFFFu;
    device = session.upload(t);
  }
  int* status() const { return static_cast<int*>(device.ptr); }
  float* norm() const { return static_cast<float*>(device.ptr) + 1; }
  std::pair<int, uint32_t> read(Session& session) const {
    const gauge::HostTensor t = session.download(device);
    return {static_cast<int>(t.view<uint32_t>()[0]), t.view<uint32_t>()[1]};
  }
};

// Runs `step` on the device and on the emulator; expects the same arena bytes, status and norm bits.
void check_step(Session& session, List& l, const opt::StepPlan& p, int64_t step, double lr, const StepOptions& options,
                bool want_norm, const std::string& what, bool nan_equivalent = false) {
  SCOPED_TRACE(what + " step " + std::to_string(step));
  const Outputs outputs(session);
  p.step(step, lr, options, outputs.status(), want_norm ? outputs.norm() : nullptr, session.stream());
  session.synchronize();
  const std::vector<unsigned char> got = l.arena.download(session);
  const StepOutcome want = emulate_step(l, step, lr, options, want_norm);
  expect_same_arena(l.arena.host(), got, l.tensors, what, nan_equivalent);
  const auto [status, norm_bits] = outputs.read(session);
  EXPECT_EQ(status, want.status);
  if (want_norm) {
    if (std::isnan(want.norm)) {
      EXPECT_TRUE(std::isnan(float_of(norm_bits)));
    } else {
      EXPECT_EQ(norm_bits, bits_of(want.norm)) << "norm " << float_of(norm_bits) << " expected " << want.norm;
    }
  } else {
    EXPECT_EQ(norm_bits, 0xFFFFFFFFu) << "norm written though not asked for";
  }
  // The device now holds the emulated state (they agree when the test passes); keep the host image
  // authoritative for the next step in any case.
  if (::testing::Test::HasFailure()) l.arena.host() = got;
}

// ---- Configurations ------------------------------------------------------------------------------

struct Config {
  const char* name;
  Hyper hyper;
};

std::vector<Config> configs() {
  std::vector<Config> c;
  Hyper h;
  h = Hyper{};
  h.algorithm = Algorithm::sgd;
  c.push_back({"sgd", h});
  h.momentum = 0.9;
  h.dampening = 0.1;
  h.weight_decay = 0.01;
  c.push_back({"sgd_momentum_dampening_wd", h});
  h.dampening = 0.0;
  h.nesterov = true;
  c.push_back({"sgd_nesterov_wd", h});
  h = Hyper{};
  h.algorithm = Algorithm::adagrad;
  h.lr_decay = 0.01;
  h.weight_decay = 0.01;
  h.initial_accumulator_value = 0.1;
  h.eps = 1e-10;
  c.push_back({"adagrad_decay_wd", h});
  h = Hyper{};
  h.algorithm = Algorithm::rmsprop;
  c.push_back({"rmsprop", h});
  h.centered = true;
  h.momentum = 0.9;
  h.weight_decay = 0.01;
  c.push_back({"rmsprop_centered_momentum_wd", h});
  h.momentum = 0.0;
  c.push_back({"rmsprop_centered", h});
  h = Hyper{};
  h.algorithm = Algorithm::adam;
  h.weight_decay = 0.01;
  c.push_back({"adam_l2", h});
  h.amsgrad = true;
  c.push_back({"adam_amsgrad_l2", h});
  h = Hyper{};
  h.algorithm = Algorithm::adamw;
  h.weight_decay = 0.1;
  c.push_back({"adamw", h});
  h.amsgrad = true;
  c.push_back({"adamw_amsgrad", h});
  return c;
}

constexpr Precision kPrecisions[] = {Precision::fp32, Precision::bf16_master, Precision::bf16_stochastic};

std::string label(const char* config, Precision p) { return std::string(config) + " " + gauge::optim::precision_name(p); }

// Two steps (SGD's first-step path, bias corrections), each option path: no pre-pass, pre-pass for
// the NaN check only, clipping with the norm reported.
void run_two_steps(Session& session, const ListSpec& spec, const std::string& what, uint64_t seed) {
  List l = make_list(spec, seed);
  l.arena.upload(session);
  const opt::StepPlan p = build_plan(session, l);
  StepOptions no_checks;
  no_checks.allow_nonfinite = true;
  no_checks.seed = seed;
  StepOptions clip;
  clip.max_grad_norm = 1.0;  // the random gradients' norm is far above 1 for every list here
  clip.seed = seed ^ 0xABCDEFull;
  check_step(session, l, p, 1, 1e-2, no_checks, false, what + " (no pre-pass)");
  check_step(session, l, p, 2, 5e-3, clip, true, what + " (clipped)");
  StepOptions check_only;
  check_only.seed = seed + 1;
  check_step(session, l, p, 3, 1e-3, check_only, false, what + " (NaN check)");
}

// ---- Reference agreement -------------------------------------------------------------------------

// reference::optim::step over host copies of a list's stored values.
struct ReferenceRun {
  std::vector<std::vector<float>> f32_params, f32_grads, masters;
  std::vector<std::vector<uint16_t>> b16_params, b16_grads;
  std::vector<std::vector<std::vector<float>>> f32_states;     // [state][tensor]
  std::vector<std::vector<std::vector<uint16_t>>> b16_states;  // [state][tensor]
  refo::StepReport report;
};

ReferenceRun run_reference(const List& l, int64_t step, double lr, const StepOptions& options) {
  ReferenceRun r;
  const Precision precision = l.spec.precision;
  r.f32_states.resize(static_cast<size_t>(l.state_count));
  r.b16_states.resize(static_cast<size_t>(l.state_count));
  for (const TensorPlace& tp : l.tensors) {
    const auto n = static_cast<size_t>(tp.n);
    std::vector<float> pf(n), gf(n), mf(n);
    std::vector<uint16_t> pb(n), gb(n);
    for (size_t i = 0; i < n; ++i) {
      const auto j = static_cast<int64_t>(i);
      if (precision == Precision::fp32) {
        pf[i] = l.arena.get(tp.param, j);
        gf[i] = l.arena.get(tp.grad, j);
      } else {
        pb[i] = l.arena.get_bits16(tp.param, j);
        gb[i] = l.arena.get_bits16(tp.grad, j);
        if (precision == Precision::bf16_master) mf[i] = l.arena.get(tp.master, j);
      }
    }
    r.f32_params.push_back(std::move(pf));
    r.f32_grads.push_back(std::move(gf));
    r.masters.push_back(std::move(mf));
    r.b16_params.push_back(std::move(pb));
    r.b16_grads.push_back(std::move(gb));
    for (int k = 0; k < l.state_count; ++k) {
      const auto kk = static_cast<size_t>(k);
      std::vector<float> sf(n);
      std::vector<uint16_t> sb(n);
      for (size_t i = 0; i < n; ++i) {
        const auto j = static_cast<int64_t>(i);
        if (precision == Precision::bf16_stochastic) {
          sb[i] = l.arena.get_bits16(tp.states[kk], j);
        } else {
          sf[i] = l.arena.get(tp.states[kk], j);
        }
      }
      r.f32_states[kk].push_back(std::move(sf));
      r.b16_states[kk].push_back(std::move(sb));
    }
  }
  refo::TensorList views;
  if (precision == Precision::bf16_stochastic) {
    views.states_bf16.resize(static_cast<size_t>(l.state_count));
  } else {
    views.states_f32.resize(static_cast<size_t>(l.state_count));
  }
  for (size_t t = 0; t < l.tensors.size(); ++t) {
    if (precision == Precision::fp32) {
      views.params_f32.emplace_back(r.f32_params[t]);
      views.grads_f32.emplace_back(r.f32_grads[t]);
    } else {
      views.params_bf16.emplace_back(r.b16_params[t]);
      views.grads_bf16.emplace_back(r.b16_grads[t]);
      if (precision == Precision::bf16_master) views.master.emplace_back(r.masters[t]);
    }
    for (int k = 0; k < l.state_count; ++k) {
      const auto kk = static_cast<size_t>(k);
      if (precision == Precision::bf16_stochastic) {
        views.states_bf16[kk].emplace_back(r.b16_states[kk][t]);
      } else {
        views.states_f32[kk].emplace_back(r.f32_states[kk][t]);
      }
    }
  }
  r.report = refo::step(l.spec.hyper, precision, refo::Math::fp32, views, step, lr, options);
  return r;
}

// The values of `got` (an arena image after the step) against the reference's, within a tolerance:
// fp32 values within 1e-5 relative, bf16 values within one bf16 ulp (stochastic or nearest rounding
// of fp32 values that differ by rounding may land on the neighbouring bf16); both plus 1e-6 absolute,
// the scale of fp32 rounding differences of the terms (O(1)) where a value cancels to near zero.
void expect_close_to_reference(const List& l, const ReferenceRun& r, const Arena& got, const std::string& what) {
  const Precision precision = l.spec.precision;
  int64_t bad = 0;
  std::string lines;
  const auto compare = [&](const std::string& name, double want, double have, bool bf16_value) {
    const double tolerance = (bf16_value ? std::ldexp(std::fabs(want), -7) : 1e-5 * std::fabs(want)) + 1e-6;
    if (!(std::fabs(want - have) <= tolerance)) {
      if (bad++ < 10) lines += "\n  " + name + ": reference " + std::to_string(want) + " got " + std::to_string(have);
    }
  };
  for (size_t t = 0; t < l.tensors.size(); ++t) {
    const TensorPlace& tp = l.tensors[t];
    for (int64_t j = 0; j < tp.n; ++j) {
      const auto i = static_cast<size_t>(j);
      const std::string where = "tensor " + std::to_string(t) + "[" + std::to_string(j) + "] ";
      if (precision == Precision::fp32) {
        compare(where + "param", r.f32_params[t][i], got.get(tp.param, j), false);
      } else {
        compare(where + "param", widen(r.b16_params[t][i]), got.get(tp.param, j), true);
        if (precision == Precision::bf16_master) compare(where + "master", r.masters[t][i], got.get(tp.master, j), false);
      }
      for (int k = 0; k < l.state_count; ++k) {
        const auto kk = static_cast<size_t>(k);
        const Array& arr = tp.states[kk];
        if (precision == Precision::bf16_stochastic) {
          compare(where + "state" + std::to_string(k), widen(r.b16_states[kk][t][i]), got.get(arr, j), true);
        } else {
          compare(where + "state" + std::to_string(k), r.f32_states[kk][t][i], got.get(arr, j), false);
        }
      }
    }
  }
  EXPECT_EQ(bad, 0) << what << ": " << bad << " values outside tolerance" << lines;
}

void check_against_reference(Session& session, const ListSpec& spec, const std::string& what, uint64_t seed) {
  SCOPED_TRACE(what);
  List l = make_list(spec, seed);
  l.arena.upload(session);
  const opt::StepPlan p = build_plan(session, l);
  StepOptions options;
  options.max_grad_norm = 5.0;
  options.seed = seed;
  const int64_t step = 2;
  const double lr = 1e-2;
  p.step(step, lr, options, nullptr, nullptr, session.stream());
  session.synchronize();
  Arena got = l.arena;
  got.host() = l.arena.download(session);
  const ReferenceRun r = run_reference(l, step, lr, options);
  ASSERT_TRUE(r.report.applied) << r.report.skipped_because;
  expect_close_to_reference(l, r, got, what);
}

// Ragged sizes: 1, 3, 1000 and 2^20 + 7 elements, chunk-boundary sizes and an empty tensor.
const std::vector<int64_t> kRaggedSizes = {1, 3, 1000, (int64_t{1} << 20) + 7, 16384, 16385, 0, 37};

#endif  // GAUGE_HAS_CUDA

TEST(CudaOptim, EveryAlgorithmAndPrecisionOnRaggedSizes) {
  if (!gauge::gpu::available()) GTEST_SKIP() << gauge::gpu::unavailable_reason();
#if defined(GAUGE_HAS_CUDA) && GAUGE_HAS_CUDA
  const auto session = open_session();
  uint64_t seed = 100;
  for (const Config& c : configs()) {
    for (const Precision precision : kPrecisions) {
      session->begin_case();
      ListSpec spec;
      spec.precision = precision;
      spec.hyper = c.hyper;
      spec.sizes = kRaggedSizes;
      run_two_steps(*session, spec, label(c.name, precision), ++seed);
      if (HasFatalFailure()) return;
    }
  }
#endif
}

// Sub-tensor pointers off the 16-byte grid: every array shifted by the same k elements (vector path
// with a k-element head), arrays in different phases (whole tensors on the scalar path), and a
// different shift per tensor.
TEST(CudaOptim, MisalignedSubTensorPointers) {
  if (!gauge::gpu::available()) GTEST_SKIP() << gauge::gpu::unavailable_reason();
#if defined(GAUGE_HAS_CUDA) && GAUGE_HAS_CUDA
  const auto session = open_session();
  uint64_t seed = 200;
  const std::vector<int64_t> sizes = {1, 3, 1000, 16390, (int64_t{1} << 17) + 5, 9};
  for (const Config& c : configs()) {
    const std::string name = c.name;
    if (name != "sgd_momentum_dampening_wd" && name != "adamw_amsgrad" && name != "rmsprop_centered_momentum_wd") continue;
    for (const Precision precision : kPrecisions) {
      for (int variant = 0; variant < 4; ++variant) {
        session->begin_case();
        ListSpec spec;
        spec.precision = precision;
        spec.hyper = c.hyper;
        spec.sizes = sizes;
        switch (variant) {
          case 0:  // all arrays shifted alike: vector path, head of 3 elements
            spec.param_misalign = spec.grad_misalign = spec.master_misalign = spec.state_misalign = 3;
            break;
          case 1:  // param and grad in different phases: every tensor scalar
            spec.param_misalign = 1;
            spec.grad_misalign = 2;
            break;
          case 2:  // states off by one element only
            spec.state_misalign = 1;
            break;
          case 3:  // a different shift per tensor (0, 1, 2, ...), arrays alike within a tensor
            spec.shift_per_tensor = 1;
            break;
        }
        const std::string what = label(c.name, precision) + " variant " + std::to_string(variant);
        if (variant == 1) {
          List l = make_list(spec, seed);
          l.arena.upload(*session);
          const opt::StepPlan p = build_plan(*session, l);
          EXPECT_EQ(p.scalar_tensor_count(), static_cast<int64_t>(sizes.size())) << what;
        }
        run_two_steps(*session, spec, what, ++seed);
        if (HasFatalFailure()) return;
      }
    }
  }
#endif
}

TEST(CudaOptim, NormIsDeterministicAndExact) {
  if (!gauge::gpu::available()) GTEST_SKIP() << gauge::gpu::unavailable_reason();
#if defined(GAUGE_HAS_CUDA) && GAUGE_HAS_CUDA
  const auto session = open_session();
  for (const Precision precision : {Precision::fp32, Precision::bf16_master}) {
    session->begin_case();
    ListSpec spec;
    spec.precision = precision;
    spec.hyper.algorithm = Algorithm::sgd;  // the update does not touch the gradients
    spec.sizes = {(int64_t{1} << 22) + 11, 1, 3, 1000, 70000, (int64_t{1} << 20) + 7};
    spec.grad_misalign = 0;
    List l = make_list(spec, 300);
    l.arena.upload(*session);
    const opt::StepPlan a = build_plan(*session, l);
    const opt::StepPlan b = build_plan(*session, l);  // a second plan over the same pointers
    StepOptions options;
    options.max_grad_norm = 1.0;
    std::vector<uint32_t> norms;
    for (int run = 0; run < 3; ++run) {
      const Outputs outputs(*session);
      (run == 2 ? b : a).step(1 + run, 0.0, options, outputs.status(), outputs.norm(), session->stream());
      session->synchronize();
      const auto [status, norm_bits] = outputs.read(*session);
      EXPECT_EQ(status, 0);
      norms.push_back(norm_bits);
    }
    EXPECT_EQ(norms[0], norms[1]) << "the norm changed between two runs of one plan";
    EXPECT_EQ(norms[0], norms[2]) << "the norm differs between two plans over the same tensors";
    // Exactly the emulated chunked sum, and close to the double-precision norm.
    const NormResult emulated = emulate_norm(l);
    EXPECT_EQ(norms[0], bits_of(std::sqrt(emulated.total)));
    double sum = 0;
    for (const TensorPlace& tp : l.tensors) {
      for (int64_t i = 0; i < tp.n; ++i) {
        const double g = l.arena.get(tp.grad, i);
        sum += g * g;
      }
    }
    // Per-thread runs of at most 64 elements (16 vector steps), then trees: relative error of the
    // sum far below 64 u + 2 log2(chunks) u; the root halves it.
    EXPECT_NEAR(float_of(norms[0]), std::sqrt(sum), 1e-5 * std::sqrt(sum));
  }
#endif
}

// A NaN or Inf gradient anywhere (vector body, scalar edge, a one-element tensor, a scalar-path
// tensor) skips the step: status 1, and not one byte of any array changes. The plan then takes the
// next clean step normally (its counter was reset).
TEST(CudaOptim, SkipOnNonfiniteLeavesEveryByte) {
  if (!gauge::gpu::available()) GTEST_SKIP() << gauge::gpu::unavailable_reason();
#if defined(GAUGE_HAS_CUDA) && GAUGE_HAS_CUDA
  const auto session = open_session();
  const float bad_values[] = {std::nanf(""), INFINITY, -INFINITY};
  uint64_t seed = 400;
  for (const Config& c : configs()) {
    const std::string name = c.name;
    if (name != "adamw_amsgrad" && name != "sgd_momentum_dampening_wd") continue;
    for (const Precision precision : kPrecisions) {
      session->begin_case();
      ListSpec spec;
      spec.precision = precision;
      spec.hyper = c.hyper;
      spec.sizes = {1000, 1, (int64_t{1} << 17) + 7, 37};
      spec.shift_per_tensor = 1;  // tensor t shifted by t elements: scalar heads of several lengths
      List l = make_list(spec, ++seed);
      l.arena.upload(*session);
      const opt::StepPlan p = build_plan(*session, l);
      const std::pair<size_t, int64_t> places[] = {{0, 0}, {0, 999}, {1, 0}, {2, 12345}, {2, (int64_t{1} << 17) + 6}, {3, 36}};
      int64_t step = 1;
      for (const float bad : bad_values) {
        for (const auto& [tensor, element] : places) {
          const std::string what = label(c.name, precision) + " bad " + std::to_string(bad) + " at tensor " +
                                   std::to_string(tensor) + "[" + std::to_string(element) + "]";
          const Array& grad = l.tensors[tensor].grad;
          const std::vector<unsigned char> saved = l.arena.host();
          l.arena.set(grad, element, bad);
          const size_t at = grad.offset + static_cast<size_t>(element) * static_cast<size_t>(grad.bytes);
          l.arena.push(*session, at, static_cast<size_t>(grad.bytes));
          for (const double clip : {0.0, 1.0}) {
            StepOptions options;
            options.max_grad_norm = clip;
            options.seed = seed;
            check_step(*session, l, p, step, 1e-2, options, clip > 0, what);
            if (HasFatalFailure()) return;
          }
          // Restore the gradient: the next step must run.
          l.arena.host() = saved;
          l.arena.push(*session, at, static_cast<size_t>(grad.bytes));
          StepOptions clean;
          clean.seed = seed;
          check_step(*session, l, p, step++, 1e-2, clean, true, what + " then clean");
          if (HasFatalFailure()) return;
        }
      }
    }
  }
#endif
}

// ---- The counted step (step number on the device) -------------------------------------------------

#if defined(GAUGE_HAS_CUDA) && GAUGE_HAS_CUDA
// An int64 step counter in device memory.
struct DeviceCounter {
  gauge::DeviceTensor device;
  DeviceCounter(Session& session, int64_t value) {
    gauge::HostTensor t("step_counter", DType::i64, {1});
    t.view<int64_t>()[0] = value;
    device = session.upload(t);
  }
  int64_t* get() const { return static_cast<int64_t*>(device.ptr); }
  int64_t read(Session& session) const { return session.download(device).view<int64_t>()[0]; }
};
#endif  // GAUGE_HAS_CUDA

// step_counted over K steps of which some carry a planted NaN / Inf gradient (in a vector body, scalar
// edges, a one-element tensor): a skipped step reports status 1, leaves the counter where it
// was and not one byte of params, master or states changed; an applied step gives exactly the bytes
// of the host step() run on a twin list on the applied steps only, with t = counter start + 1, + 2,
// ... (the first step is a skipped one, so SGD's "first step" must wait for the first applied step),
// and the same status and norm bits. The last step allows non-finite gradients: the counted step
// runs its pre-pass even where the host step would not, and still advances.
// Adam's bias corrections go through pow, which CUDA and glibc may round differently (step_scalars.h);
// for beta1 0.9, beta2 0.999 and the t and lr used here, every double scalar lies more than 5,000
// times that difference away from an fp32 rounding tie (checked offline), so the bits must agree.
TEST(CudaOptim, CountedStepAdvancesOnlyOnAppliedSteps) {
  if (!gauge::gpu::available()) GTEST_SKIP() << gauge::gpu::unavailable_reason();
#if defined(GAUGE_HAS_CUDA) && GAUGE_HAS_CUDA
  const auto session = open_session();
  const bool skipped[] = {true, false, false, true, true, false, true, false, false, false};
  constexpr size_t kSteps = std::size(skipped);
  const float bad_values[] = {INFINITY, std::nanf(""), -INFINITY};
  uint64_t seed = 1000;
  for (const Config& c : configs()) {
    for (const Precision precision : kPrecisions) {
      for (const int64_t counter_start : {int64_t{0}, int64_t{999}}) {
        session->begin_case();
        const std::string what = label(c.name, precision) + " counter from " + std::to_string(counter_start);
        SCOPED_TRACE(what);
        ListSpec spec;
        spec.precision = precision;
        spec.hyper = c.hyper;
        spec.sizes = {1000, 1, 20001, 37};
        spec.shift_per_tensor = 1;  // scalar heads of several lengths
        ++seed;
        List counted = make_list(spec, seed);
        List twin = make_list(spec, seed);
        ASSERT_EQ(counted.arena.host(), twin.arena.host()) << "the twin lists must start from the same bytes";
        counted.arena.upload(*session);
        twin.arena.upload(*session);
        const opt::StepPlan counted_plan = build_plan(*session, counted);
        const opt::StepPlan twin_plan = build_plan(*session, twin);
        const DeviceCounter counter(*session, counter_start);
        int64_t applied = counter_start;
        // Skipped steps 0, 3, 4, 6 plant in a vector body, the one-element tensor, the last element of
        // a short tensor and a scalar tail (tensor 2, shifted by 2 elements, ends in one).
        const std::pair<size_t, int64_t> places[] = {{2, 4321}, {2, 20000}, {0, 999}, {1, 0}, {3, 36}};
        for (size_t k = 0; k < kSteps; ++k) {
          SCOPED_TRACE("step " + std::to_string(k) + (skipped[k] ? " (skipped)" : ""));
          const double lr = 1e-2 / static_cast<double>(k + 1);
          StepOptions options;
          options.seed = seed;
          options.max_grad_norm = (k % 2 == 1 && k != kSteps - 1) ? 1.0 : 0.0;
          options.allow_nonfinite = k == kSteps - 1;
          const bool want_norm = k % 3 == 1;
          const auto [tensor, element] = places[k % std::size(places)];
          const Array& grad = counted.tensors[tensor].grad;
          const size_t at = grad.offset + static_cast<size_t>(element) * static_cast<size_t>(grad.bytes);
          const std::vector<unsigned char> saved = counted.arena.host();
          if (skipped[k]) {
            counted.arena.set(grad, element, bad_values[k % std::size(bad_values)]);
            counted.arena.push(*session, at, static_cast<size_t>(grad.bytes));
          }
          const std::vector<unsigned char> before = counted.arena.download(*session);
          const Outputs counted_out(*session);
          const Outputs twin_out(*session);
          counted_plan.step_counted(counter.get(), lr, options, counted_out.status(), want_norm ? counted_out.norm() : nullptr,
                                    session->stream());
          if (!skipped[k]) {
            twin_plan.step(++applied, lr, options, twin_out.status(), want_norm ? twin_out.norm() : nullptr, session->stream());
          }
          session->synchronize();
          const std::vector<unsigned char> got = counted.arena.download(*session);
          const auto [status, norm_bits] = counted_out.read(*session);
          EXPECT_EQ(counter.read(*session), applied);
          EXPECT_EQ(status, skipped[k] ? 1 : 0);
          if (skipped[k]) {
            expect_same_arena(before, got, counted.tensors, what + ": a skipped counted step wrote");
            if (want_norm) {
              EXPECT_FALSE(std::fabs(float_of(norm_bits)) <= FLT_MAX) << "the norm of a non-finite gradient";
            }
            // Restore the gradient (the twin's never changed).
            counted.arena.host() = saved;
            counted.arena.push(*session, at, static_cast<size_t>(grad.bytes));
          } else {
            expect_same_arena(twin.arena.download(*session), got, counted.tensors,
                              what + ": counted step vs host step " + std::to_string(applied));
            const auto [twin_status, twin_norm_bits] = twin_out.read(*session);
            EXPECT_EQ(twin_status, 0);
            EXPECT_EQ(norm_bits, twin_norm_bits) << "norm";
          }
          if (HasFatalFailure()) return;
        }
        EXPECT_EQ(applied - counter_start, static_cast<int64_t>(std::count(skipped, skipped + kSteps, false)));
      }
    }
  }
  // Arguments: a null or misaligned counter, a bad lr, are refused before any launch.
  ListSpec spec;
  spec.hyper.algorithm = Algorithm::adam;
  spec.sizes = {10, 3};
  List l = make_list(spec, 1100);
  l.arena.upload(*session);
  const opt::StepPlan p = build_plan(*session, l);
  const DeviceCounter counter(*session, 0);
  EXPECT_THROW(p.step_counted(nullptr, 1e-3, StepOptions{}, nullptr, nullptr, session->stream()), gauge::UsageError);
  EXPECT_THROW(p.step_counted(reinterpret_cast<int64_t*>(reinterpret_cast<unsigned char*>(counter.get()) + 4), 1e-3,
                              StepOptions{}, nullptr, nullptr, session->stream()),
               gauge::UsageError);
  EXPECT_THROW(p.step_counted(counter.get(), -1.0, StepOptions{}, nullptr, nullptr, session->stream()), gauge::UsageError);
  StepOptions bad_clip;
  bad_clip.max_grad_norm = -1.0;
  EXPECT_THROW(p.step_counted(counter.get(), 1e-3, bad_clip, nullptr, nullptr, session->stream()), gauge::UsageError);
  session->synchronize();
  EXPECT_EQ(counter.read(*session), 0) << "a refused step moved the counter";
  // An empty plan still counts its (applied) steps.
  const opt::StepPlan empty(opt::TensorList{}, Precision::fp32, spec.hyper,
                            [&](size_t bytes) { return session->workspace(bytes); }, session->stream());
  const Outputs outputs(*session);
  empty.step_counted(counter.get(), 1e-3, StepOptions{}, outputs.status(), nullptr, session->stream());
  empty.step_counted(counter.get(), 1e-3, StepOptions{}, outputs.status(), nullptr, session->stream());
  session->synchronize();
  EXPECT_EQ(counter.read(*session), 2);
  EXPECT_EQ(outputs.read(*session).first, 0);
#endif
}

// allow_nonfinite: the step runs and NaN / Inf propagate as in PyTorch (with clipping, an Inf norm
// gives coefficient 0, a NaN norm a NaN coefficient). NaN payloads differ between host and device,
// so NaNs compare as equal.
TEST(CudaOptim, AllowNonfinitePropagates) {
  if (!gauge::gpu::available()) GTEST_SKIP() << gauge::gpu::unavailable_reason();
#if defined(GAUGE_HAS_CUDA) && GAUGE_HAS_CUDA
  const auto session = open_session();
  uint64_t seed = 500;
  for (const float bad : {std::nanf(""), INFINITY}) {
    for (const Precision precision : kPrecisions) {
      for (const double clip : {0.0, 1.0}) {
        session->begin_case();
        ListSpec spec;
        spec.precision = precision;
        spec.hyper.algorithm = Algorithm::adamw;
        spec.hyper.weight_decay = 0.1;
        spec.hyper.amsgrad = true;
        spec.sizes = {1000, 5000};
        List l = make_list(spec, ++seed);
        l.arena.set(l.tensors[1].grad, 17, bad);
        l.arena.upload(*session);
        const opt::StepPlan p = build_plan(*session, l);
        StepOptions options;
        options.allow_nonfinite = true;
        options.max_grad_norm = clip;
        options.seed = seed;
        check_step(*session, l, p, 1, 1e-2, options, true,
                   label("adamw_amsgrad", precision) + " allow " + std::to_string(bad) + " clip " + std::to_string(clip),
                   /*nan_equivalent=*/true);
      }
    }
  }
#endif
}

TEST(CudaOptim, AgreesWithTheReference) {
  if (!gauge::gpu::available()) GTEST_SKIP() << gauge::gpu::unavailable_reason();
#if defined(GAUGE_HAS_CUDA) && GAUGE_HAS_CUDA
  const auto session = open_session();
  uint64_t seed = 600;
  for (const Config& c : configs()) {
    for (const Precision precision : kPrecisions) {
      session->begin_case();
      ListSpec spec;
      spec.precision = precision;
      spec.hyper = c.hyper;
      spec.sizes = {1, 3, 1000, 20000};
      check_against_reference(*session, spec, label(c.name, precision), ++seed);
      if (HasFatalFailure()) return;
    }
  }
#endif
}

TEST(CudaOptim, InitializeState) {
  if (!gauge::gpu::available()) GTEST_SKIP() << gauge::gpu::unavailable_reason();
#if defined(GAUGE_HAS_CUDA) && GAUGE_HAS_CUDA
  const auto session = open_session();
  for (const Config& c : configs()) {
    for (const Precision precision : kPrecisions) {
      session->begin_case();
      ListSpec spec;
      spec.precision = precision;
      spec.hyper = c.hyper;
      spec.sizes = {1, 1000, 20001};
      spec.state_misalign = 1;
      List l = make_list(spec, 700);
      l.arena.upload(*session);
      const opt::StepPlan p = build_plan(*session, l);
      p.initialize_state(session->stream());
      session->synchronize();
      const std::vector<unsigned char> got = l.arena.download(*session);
      const float first = c.hyper.algorithm == Algorithm::adagrad ? static_cast<float>(c.hyper.initial_accumulator_value) : 0.0f;
      for (const TensorPlace& tp : l.tensors) {
        for (int64_t i = 0; i < tp.n; ++i) {
          if (precision == Precision::bf16_master) l.arena.set_f32(tp.master, i, widen(l.arena.get_bits16(tp.param, i)));
          for (int k = 0; k < l.state_count; ++k) l.arena.set(tp.states[static_cast<size_t>(k)], i, k == 0 ? first : 0.0f);
        }
      }
      expect_same_arena(l.arena.host(), got, l.tensors, label(c.name, precision) + " initialize_state");
    }
  }
#endif
}

// Status is written even without the pre-pass, and bad arguments are refused before any launch.
TEST(CudaOptim, StatusAndArgumentChecks) {
  if (!gauge::gpu::available()) GTEST_SKIP() << gauge::gpu::unavailable_reason();
#if defined(GAUGE_HAS_CUDA) && GAUGE_HAS_CUDA
  const auto session = open_session();
  ListSpec spec;
  spec.hyper.algorithm = Algorithm::adam;
  spec.sizes = {10, 0, 3};
  List l = make_list(spec, 800);
  l.arena.upload(*session);
  const opt::StepPlan p = build_plan(*session, l);
  EXPECT_EQ(p.tensor_count(), 3);
  EXPECT_LE(p.workspace_bytes(), opt::StepPlan::workspace_bytes_bound(spec.sizes));
  StepOptions no_checks;
  no_checks.allow_nonfinite = true;
  EXPECT_FALSE(opt::StepPlan::needs_norm_pass(no_checks, nullptr));
  check_step(*session, l, p, 1, 1e-3, no_checks, false, "no pre-pass");  // status 7 -> 0
  EXPECT_THROW(p.step(0, 1e-3, no_checks, nullptr, nullptr, session->stream()), gauge::UsageError);
  EXPECT_THROW(p.step(1, -1.0, no_checks, nullptr, nullptr, session->stream()), gauge::UsageError);

  const auto allocate = [&](size_t bytes) { return session->workspace(bytes); };
  opt::TensorList bad = device_list(l);
  bad.grads.pop_back();
  EXPECT_THROW(opt::StepPlan(bad, Precision::fp32, spec.hyper, allocate, session->stream()), gauge::UsageError);
  bad = device_list(l);
  bad.states.pop_back();
  EXPECT_THROW(opt::StepPlan(bad, Precision::fp32, spec.hyper, allocate, session->stream()), gauge::UsageError);
  bad = device_list(l);
  bad.params[0] = static_cast<unsigned char*>(bad.params[0]) + 1;  // not float-aligned
  EXPECT_THROW(opt::StepPlan(bad, Precision::fp32, spec.hyper, allocate, session->stream()), gauge::UsageError);
  bad = device_list(l);
  bad.grads[2] = nullptr;
  EXPECT_THROW(opt::StepPlan(bad, Precision::fp32, spec.hyper, allocate, session->stream()), gauge::UsageError);
  Hyper wrong = spec.hyper;
  wrong.beta1 = 1.5;
  EXPECT_THROW(opt::StepPlan(device_list(l), Precision::fp32, wrong, allocate, session->stream()), gauge::UsageError);
  // An empty list is a valid plan: nothing to do, status 0, norm 0.
  const opt::StepPlan empty(opt::TensorList{}, Precision::fp32, spec.hyper, allocate, session->stream());
  const Outputs outputs(*session);
  empty.step(1, 1e-3, StepOptions{}, outputs.status(), outputs.norm(), session->stream());
  session->synchronize();
  const auto [status, norm_bits] = outputs.read(*session);
  EXPECT_EQ(status, 0);
  EXPECT_EQ(norm_bits, 0u);
#endif
}

// ---- Gradient accumulation ---------------------------------------------------------------------------

TEST(CudaOptim, GradientAccumulation) {
  if (!gauge::gpu::available()) GTEST_SKIP() << gauge::gpu::unavailable_reason();
#if defined(GAUGE_HAS_CUDA) && GAUGE_HAS_CUDA
  const auto session = open_session();
  const std::vector<int64_t> sizes = {1, 3, 1000, (int64_t{1} << 20) + 7, 0};
  using opt::GradFormat;
  struct Case {
    int k;
    GradFormat micro, out;
    bool in_place;
    int misalign;
  };
  const Case cases[] = {{3, GradFormat::f32, GradFormat::f32, true, 0},   {4, GradFormat::f32, GradFormat::f32, false, 1},
                        {3, GradFormat::bf16, GradFormat::bf16, false, 0}, {5, GradFormat::bf16, GradFormat::f32, false, 3},
                        {2, GradFormat::f32, GradFormat::bf16, false, 2},  {1, GradFormat::f32, GradFormat::f32, false, 0},
                        {1, GradFormat::bf16, GradFormat::bf16, false, 5}};
  uint64_t seed = 900;
  for (const Case& c : cases) {
    session->begin_case();
    const std::string what = "k=" + std::to_string(c.k) + (c.micro == GradFormat::bf16 ? " bf16" : " f32") + "->" +
                             (c.out == GradFormat::bf16 ? "bf16" : "f32") + (c.in_place ? " in place" : "") +
                             " misalign " + std::to_string(c.misalign);
    SCOPED_TRACE(what);
    Arena arena(++seed);
    std::vector<TensorPlace> places;  // grad = micro 0, states = micro 1.., param = acc, master = out
    const int gbytes = c.micro == GradFormat::bf16 ? 2 : 4;
    const int obytes = c.out == GradFormat::bf16 ? 2 : 4;
    std::vector<std::vector<Array>> micro(static_cast<size_t>(c.k));
    std::vector<Array> acc, out;
    for (const int64_t n : sizes) {
      TensorPlace tp;
      tp.n = n;
      for (int j = 0; j < c.k; ++j) {
        micro[static_cast<size_t>(j)].push_back(arena.add(n, gbytes, c.misalign));
        arena.fill(micro[static_cast<size_t>(j)].back(), n, -1.0f, 1.0f);
        if (j == 0) {
          tp.grad = micro[0].back();
        } else {
          tp.states.push_back(micro[static_cast<size_t>(j)].back());
        }
      }
      acc.push_back(arena.add(n, 4, c.misalign));
      out.push_back(c.in_place ? acc.back() : arena.add(n, obytes, c.misalign));
      tp.param = acc.back();
      tp.master = out.back();
      places.push_back(tp);
    }
    arena.upload(*session);
    opt::AccumulateList list;
    list.micro_grads.resize(static_cast<size_t>(c.k));
    for (size_t t = 0; t < sizes.size(); ++t) {
      for (int j = 0; j < c.k; ++j) list.micro_grads[static_cast<size_t>(j)].push_back(arena.device(micro[static_cast<size_t>(j)][t]));
      list.accumulators.push_back(static_cast<float*>(arena.device(acc[t])));
      list.outputs.push_back(arena.device(out[t]));
      list.sizes.push_back(sizes[t]);
    }
    const opt::AccumulatePlan p(list, c.micro, c.out, [&](size_t bytes) { return session->workspace(bytes); },
                                session->stream());
    EXPECT_EQ(p.micro_batches(), c.k);
    for (int j = 0; j < c.k; ++j) p.accumulate(j, session->stream());
    session->synchronize();
    const std::vector<unsigned char> got = arena.download(*session);
    // Emulate: acc = g0; acc = acc + g_j (j < k - 1); out = (acc + g_{k-1}) * fp32(1 / k). The
    // accumulator is left holding the prefix sum of the first k - 1 micro-batches (k > 1).
    const float inv_k = opt::accumulation_scale(c.k);
    Arena want = arena;
    for (size_t t = 0; t < sizes.size(); ++t) {
      for (int64_t i = 0; i < sizes[t]; ++i) {
        float prefix = arena.get(micro[0][t], i);
        for (int j = 1; j < c.k - 1; ++j) prefix = prefix + arena.get(micro[static_cast<size_t>(j)][t], i);
        const float sum = c.k == 1 ? prefix : prefix + arena.get(micro[static_cast<size_t>(c.k - 1)][t], i);
        if (c.k > 1) want.set_f32(acc[t], i, prefix);  // in place: overwritten by the mean just below
        const float mean = sum * inv_k;
        if (c.out == GradFormat::bf16) {
          want.set_bits16(out[t], i, refp::f32_to_bf16(mean));
        } else {
          want.set_f32(out[t], i, mean);
        }
      }
    }
    expect_same_arena(want.host(), got, places, what);
    // And the reference's double-then-round mean, within the fp32 sum's rounding.
    Arena have = arena;
    have.host() = got;
    int64_t bad = 0;
    for (size_t t = 0; t < sizes.size(); ++t) {
      const auto n = static_cast<size_t>(sizes[t]);
      std::vector<std::vector<float>> batches(static_cast<size_t>(c.k), std::vector<float>(n));
      std::vector<std::span<const float>> spans;
      double magnitude_sum = 0;
      for (int j = 0; j < c.k; ++j) {
        for (size_t i = 0; i < n; ++i) batches[static_cast<size_t>(j)][i] = arena.get(micro[static_cast<size_t>(j)][t], static_cast<int64_t>(i));
        spans.emplace_back(batches[static_cast<size_t>(j)]);
      }
      std::vector<float> mean(n);
      refo::accumulate_mean(spans, mean);
      for (size_t i = 0; i < n; ++i) {
        magnitude_sum = 0;
        for (int j = 0; j < c.k; ++j) magnitude_sum += std::fabs(batches[static_cast<size_t>(j)][i]);
        const double tolerance = (c.k + 1) * 0x1.0p-24 * magnitude_sum / c.k +
                                 (c.out == GradFormat::bf16 ? std::ldexp(std::fabs(mean[i]), -8) : 0.0) + 1e-30;
        if (!(std::fabs(have.get(out[t], static_cast<int64_t>(i)) - mean[i]) <= tolerance)) ++bad;
      }
    }
    EXPECT_EQ(bad, 0) << "elements farther from the reference mean than the fp32 sum's rounding";
  }
#endif
}

}  // namespace
