// optimized/nn on the device, beyond the conformance cases: ragged shapes (cols not a multiple of the
// vector width, one row), the alignment contract (RuntimeFailure), the size limits (UsageError),
// determinism (two runs, identical bits) of everything that reduces, and the Linear without input
// features (in == 0). Every test skips without a GPU.
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <vector>

#include "harness/gpu.h"

#if defined(GAUGE_HAS_CUDA) && GAUGE_HAS_CUDA
#include <cuda_runtime.h>

#include "harness/error.h"
#include "harness/inputs.h"
#include "harness/tensor.h"
#include "optimized/nn/layers.h"
#include "reference/nn/layers.h"
#endif

namespace gauge::suites::nn {
namespace {

#if defined(GAUGE_HAS_CUDA) && GAUGE_HAS_CUDA
namespace ref = gauge::reference::nn;
namespace opt = gauge::optimized::nn;

struct Device {
  std::unique_ptr<gpu::Session> session = gpu::Session::open();
  Device() { session->begin_case(); }
  DeviceTensor up(const HostTensor& t) { return session->upload(t); }
  DeviceTensor out(const std::string& name, DType dtype, Shape shape) {
    return session->allocate_poisoned(name, dtype, shape);
  }
  HostTensor down(const DeviceTensor& t) {
    session->synchronize();
    return session->download(t);
  }
  StreamHandle stream() { return session->stream(); }
};

HostTensor uniform(const std::string& name, Shape shape, uint32_t id, float low, float high) {
  return inputs::uniform_f32(name, std::move(shape), inputs::kDefaultSeed, id, low, high);
}

void expect_same_bits(const HostTensor& a, const HostTensor& b, const char* what) {
  ASSERT_EQ(a.size_bytes(), b.size_bytes()) << what;
  EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size_bytes()), 0) << what << " differs between two runs";
}

void expect_close(const HostTensor& actual, std::span<const float> expected, double rtol, double atol, const char* what) {
  const auto a = actual.view<float>();
  ASSERT_EQ(a.size(), expected.size()) << what;
  for (size_t i = 0; i < a.size(); ++i) {
    ASSERT_NEAR(a[i], expected[i], atol + rtol * std::abs(expected[i])) << what << "[" << i << "]";
  }
}
#endif

TEST(CudaNn, DropoutIsBitExactOnRaggedSizes) {
  if (!gauge::gpu::available()) GTEST_SKIP() << gauge::gpu::unavailable_reason();
#if defined(GAUGE_HAS_CUDA) && GAUGE_HAS_CUDA
  Device d;
  for (int64_t n : {int64_t{1}, int64_t{3}, int64_t{5}, int64_t{1001}, int64_t{(1 << 16) + 7}}) {
    const HostTensor x = uniform("x", {n}, 1, -2, 2);
    const DeviceTensor dx = d.up(x);
    const DeviceTensor dy = d.out("y", DType::f32, {n});
    opt::dropout_forward(0.3f, 42, 5, n, DType::f32, dx.ptr, dy.ptr, d.stream());
    const HostTensor y = d.down(dy);
    std::vector<float> expected(static_cast<size_t>(n));
    ref::dropout_forward(0.3f, 42, 5, x.view<float>(), expected);
    for (int64_t i = 0; i < n; ++i) {
      ASSERT_EQ(std::bit_cast<uint32_t>(y.view<float>()[i]), std::bit_cast<uint32_t>(expected[i])) << n << ": " << i;
    }
  }
#endif
}

TEST(CudaNn, MisalignedPointersAreRejected) {
  if (!gauge::gpu::available()) GTEST_SKIP() << gauge::gpu::unavailable_reason();
#if defined(GAUGE_HAS_CUDA) && GAUGE_HAS_CUDA
  Device d;
  const DeviceTensor x = d.up(uniform("x", {64}, 1, -1, 1));
  const DeviceTensor y = d.out("y", DType::f32, {64});
  float* shifted = static_cast<float*>(y.ptr) + 1;
  EXPECT_THROW(opt::dropout_forward(0.1f, 1, 1, 32, DType::f32, x.ptr, shifted, d.stream()), RuntimeFailure);
  EXPECT_THROW(opt::bias_activation_forward(opt::Activation::relu, {4, 8}, DType::f32, x.ptr, nullptr, shifted, d.stream()),
               RuntimeFailure);
  EXPECT_THROW(opt::activation_backward(opt::Activation::silu, 32, DType::f32, shifted, x.ptr, y.ptr, d.stream()),
               RuntimeFailure);
  EXPECT_THROW(opt::dropout_forward(1.0f, 1, 1, 32, DType::f32, x.ptr, y.ptr, d.stream()), UsageError);
  EXPECT_THROW(opt::dropout_forward(0.1f, 1, 1, 32, DType::e4m3, x.ptr, y.ptr, d.stream()), UsageError);
  float* mean = static_cast<float*>(y.ptr);
  EXPECT_THROW(opt::layernorm_forward({1, 4097, 1e-5f}, DType::f32, x.ptr, x.ptr, x.ptr, y.ptr, mean, mean, d.stream()),
               UsageError);  // ragged rows wider than 4096
#endif
}

TEST(CudaNn, RaggedNormsMatchTheReferenceAndAreDeterministic) {
  if (!gauge::gpu::available()) GTEST_SKIP() << gauge::gpu::unavailable_reason();
#if defined(GAUGE_HAS_CUDA) && GAUGE_HAS_CUDA
  Device d;
  for (const auto& [rows, cols] : {std::pair<int64_t, int64_t>{1, 5}, {3, 33}, {1000, 771}, {1, 8192}, {257, 4096}}) {
    SCOPED_TRACE(std::to_string(rows) + " x " + std::to_string(cols));
    const ref::NormShape s{rows, cols, 1e-5f};
    const HostTensor x = uniform("x", {rows, cols}, 1, -1, 1), gamma = uniform("gamma", {cols}, 2, 0.5f, 1.5f),
                     beta = uniform("beta", {cols}, 3, -0.5f, 0.5f), dy = uniform("dy", {rows, cols}, 4, -1, 1);
    std::vector<float> y(static_cast<size_t>(rows * cols)), mean(static_cast<size_t>(rows)), rstd(mean.size());
    std::vector<float> dx(y.size()), dgamma(static_cast<size_t>(cols)), dbeta(dgamma.size());
    ref::layernorm_forward(s, x.view<float>(), gamma.view<float>(), beta.view<float>(), y, mean, rstd);
    ref::layernorm_backward(s, x.view<float>(), gamma.view<float>(), mean, rstd, dy.view<float>(), dx, dgamma, dbeta);

    const DeviceTensor dx_in = d.up(x), dgam = d.up(gamma), dbet = d.up(beta), ddy = d.up(dy);
    const DeviceTensor dy_out = d.out("y", DType::f32, {rows, cols}), dmean = d.out("mean", DType::f32, {rows}),
                       drstd = d.out("rstd", DType::f32, {rows});
    opt::layernorm_forward(s, DType::f32, dx_in.ptr, dgam.ptr, dbet.ptr, dy_out.ptr, static_cast<float*>(dmean.ptr),
                           static_cast<float*>(drstd.ptr), d.stream());
    const double rtol = 1e-5, atol = 1e-5;  // loose sanity bounds; the conformance cases apply the derived rules
    expect_close(d.down(dy_out), y, rtol, atol, "y");
    expect_close(d.down(drstd), rstd, rtol, atol, "rstd");

    void* ws = d.session->workspace(opt::norm_backward_workspace_bytes(s));
    HostTensor first[3];
    for (int run = 0; run < 2; ++run) {
      const DeviceTensor ddx = d.out("dx", DType::f32, {rows, cols}), ddg = d.out("dgamma", DType::f32, {cols}),
                         ddb = d.out("dbeta", DType::f32, {cols});
      opt::layernorm_backward(s, DType::f32, dx_in.ptr, dgam.ptr, static_cast<const float*>(dmean.ptr),
                              static_cast<const float*>(drstd.ptr), ddy.ptr, ddx.ptr, static_cast<float*>(ddg.ptr),
                              static_cast<float*>(ddb.ptr), ws, d.stream());
      HostTensor got[3] = {d.down(ddx), d.down(ddg), d.down(ddb)};
      if (run == 0) {
        expect_close(got[0], dx, 1e-4, 1e-4, "dx");
        expect_close(got[1], dgamma, 1e-4, 1e-4 * static_cast<double>(rows), "dgamma");
        expect_close(got[2], dbeta, 1e-4, 1e-4 * static_cast<double>(rows), "dbeta");
        for (int k = 0; k < 3; ++k) first[k] = std::move(got[k]);
      } else {
        expect_same_bits(first[0], got[0], "dx");
        expect_same_bits(first[1], got[1], "dgamma");
        expect_same_bits(first[2], got[2], "dbeta");
      }
    }
  }
#endif
}

TEST(CudaNn, LinearBiasGradientIsDeterministicAndSoftmaxTakesOneRow) {
  if (!gauge::gpu::available()) GTEST_SKIP() << gauge::gpu::unavailable_reason();
#if defined(GAUGE_HAS_CUDA) && GAUGE_HAS_CUDA
  Device d;
  const ref::LinearShape s{1000, 37, 45};
  const HostTensor x = uniform("x", {s.rows, s.in}, 1, -1, 1), w = uniform("w", {s.out, s.in}, 2, -1, 1),
                   dy = uniform("dy", {s.rows, s.out}, 3, -1, 1);
  const DeviceTensor dxin = d.up(x), dw_in = d.up(w), ddy = d.up(dy);
  opt::LinearPlan plan(d.session->blas_lt(), s, DType::f32, true);
  void* ws = d.session->workspace(plan.workspace_bytes());
  HostTensor first;
  for (int run = 0; run < 2; ++run) {
    const DeviceTensor ddb = d.out("dbias", DType::f32, {s.out}), ddw = d.out("dw", DType::f32, {s.out, s.in});
    plan.backward(dxin.ptr, dw_in.ptr, ddy.ptr, nullptr, static_cast<float*>(ddw.ptr), static_cast<float*>(ddb.ptr), ws,
                  d.stream());
    HostTensor db = d.down(ddb);
    if (run == 0) {
      std::vector<float> expected(static_cast<size_t>(s.out));
      ref::linear_backward(s, x.view<float>(), w.view<float>(), dy.view<float>(), {}, {}, expected);
      expect_close(db, expected, 1e-5, 1e-4, "dbias");
      first = std::move(db);
    } else {
      expect_same_bits(first, db, "dbias");
    }
  }

  const HostTensor logits = uniform("logits", {1, 3}, 5, -1, 1);
  HostTensor labels("labels", DType::i32, {1});
  labels.view<int32_t>()[0] = 2;
  const DeviceTensor dl = d.up(logits), dlab = d.up(labels);
  const DeviceTensor loss = d.out("loss", DType::f32, {1}), mean = d.out("mean", DType::f32, {1});
  opt::softmax_cross_entropy_forward(1, 3, DType::f32, dl.ptr, static_cast<const int32_t*>(dlab.ptr),
                                     static_cast<float*>(loss.ptr), static_cast<float*>(mean.ptr), d.stream());
  std::vector<float> expected(1);
  ref::softmax_cross_entropy_forward(1, 3, logits.view<float>(), labels.view<int32_t>(), expected);
  expect_close(d.down(loss), expected, 1e-6, 1e-6, "row loss");
  expect_close(d.down(mean), expected, 1e-6, 1e-6, "mean loss");
#endif
}

// Masked logits (-Inf) are a normal input: a thread whose whole share of the row is -Inf must add
// exp(-Inf) = 0, not exp(-Inf - -Inf) = NaN, to the row's log-sum-exp. A NaN logit, on the other
// hand, must reach the loss whichever thread holds it. Both dtypes' vector and scalar paths.
TEST(CudaNn, SoftmaxCrossEntropyTakesMaskedLogitsAndPropagatesNaN) {
  if (!gauge::gpu::available()) GTEST_SKIP() << gauge::gpu::unavailable_reason();
#if defined(GAUGE_HAS_CUDA) && GAUGE_HAS_CUDA
  Device d;
  for (const int64_t classes : {int64_t{1000}, int64_t{1001}}) {  // vector path, scalar path
    SCOPED_TRACE(std::to_string(classes) + " classes");
    const int64_t rows = 3;
    HostTensor logits = uniform("logits", {rows, classes}, 5, -2, 2);
    HostTensor labels("labels", DType::i32, {rows});
    auto values = logits.view<float>();
    // Row 0: only the first 8 classes are unmasked (threads 2.. of the block see nothing but -Inf).
    for (int64_t c = 8; c < classes; ++c) values[static_cast<size_t>(c)] = -INFINITY;
    // Row 1: NaN in the first 8 elements (thread 0's whole first vector), everything else finite.
    for (int64_t c = 0; c < 8; ++c) values[static_cast<size_t>(classes + c)] = NAN;
    // Row 2: -Inf everywhere but the last class, which holds the label.
    for (int64_t c = 0; c + 1 < classes; ++c) values[static_cast<size_t>(2 * classes + c)] = -INFINITY;
    labels.view<int32_t>()[0] = 3;
    labels.view<int32_t>()[1] = 7;
    labels.view<int32_t>()[2] = static_cast<int32_t>(classes - 1);
    std::vector<float> expected(static_cast<size_t>(rows)), expected_grad(static_cast<size_t>(rows * classes));
    ref::softmax_cross_entropy_forward(rows, classes, logits.view<float>(), labels.view<int32_t>(), expected);
    ref::softmax_cross_entropy_backward(rows, classes, logits.view<float>(), labels.view<int32_t>(), 1.0f, expected_grad);
    ASSERT_TRUE(std::isfinite(expected[0]) && std::isnan(expected[1]) && std::isfinite(expected[2]));

    const DeviceTensor dl = d.up(logits), dlab = d.up(labels);
    const DeviceTensor loss = d.out("loss", DType::f32, {rows}), grad = d.out("dlogits", DType::f32, {rows, classes});
    opt::softmax_cross_entropy_forward(rows, classes, DType::f32, dl.ptr, static_cast<const int32_t*>(dlab.ptr),
                                       static_cast<float*>(loss.ptr), nullptr, d.stream());
    opt::softmax_cross_entropy_backward(rows, classes, DType::f32, dl.ptr, static_cast<const int32_t*>(dlab.ptr), 1.0f,
                                        grad.ptr, d.stream());
    const HostTensor got = d.down(loss), got_grad = d.down(grad);
    const auto l = got.view<float>();
    EXPECT_NEAR(l[0], expected[0], 1e-5 + 1e-5 * std::abs(expected[0]));
    EXPECT_TRUE(std::isnan(l[1])) << l[1];
    EXPECT_NEAR(l[2], expected[2], 1e-6);
    const auto g = got_grad.view<float>();
    for (int64_t r : {int64_t{0}, int64_t{2}}) {
      for (int64_t c = 0; c < classes; ++c) {
        const auto i = static_cast<size_t>(r * classes + c);
        ASSERT_NEAR(g[i], expected_grad[i], 1e-6) << "dlogits[" << r << ", " << c << "]";
      }
    }
    for (int64_t c = 0; c < classes; ++c) ASSERT_TRUE(std::isnan(g[static_cast<size_t>(classes + c)])) << c;
  }
#endif
}

// The bias epilogue with a bias that is only 16-byte aligned (the alignment layers.h promises; a slice
// of a flat parameter buffer): the plan's algorithm must accept it, and y must match the reference.
TEST(CudaNn, LinearForwardTakesASixteenByteAlignedBias) {
  if (!gauge::gpu::available()) GTEST_SKIP() << gauge::gpu::unavailable_reason();
#if defined(GAUGE_HAS_CUDA) && GAUGE_HAS_CUDA
  Device d;
  for (const ref::LinearShape s : {ref::LinearShape{64, 128, 96}, ref::LinearShape{5, 40, 36}}) {
    SCOPED_TRACE(std::to_string(s.rows) + " x " + std::to_string(s.in) + " -> " + std::to_string(s.out));
    const HostTensor x = uniform("x", {s.rows, s.in}, 1, -1, 1), w = uniform("w", {s.out, s.in}, 2, -1, 1);
    // The bias lives 16 bytes into a buffer: aligned to 16 but not to 32 or more.
    const HostTensor padded_bias = uniform("bias", {s.out + 4}, 3, -1, 1);
    const std::span<const float> bias = padded_bias.view<float>().subspan(4, static_cast<size_t>(s.out));
    std::vector<float> expected(static_cast<size_t>(s.rows * s.out));
    ref::linear_forward(s, x.view<float>(), w.view<float>(), bias, expected);

    const DeviceTensor dx = d.up(x), dw = d.up(w), db = d.up(padded_bias);
    const DeviceTensor y = d.out("y", DType::f32, {s.rows, s.out});
    opt::LinearPlan plan(d.session->blas_lt(), s, DType::f32, true);
    void* ws = d.session->workspace(std::max<size_t>(plan.workspace_bytes(), 256));
    plan.forward(dx.ptr, dw.ptr, static_cast<const float*>(db.ptr) + 4, y.ptr, ws, d.stream());
    expect_close(d.down(y), expected, 1e-5, 1e-5, "y");
  }
#endif
}

// in == 0 (a Linear without input features): no matmul is made (cuBLASLt has no k = 0 contract); y is
// the bias copied into every row (bit for bit) or zeros without a bias, x and w may be null, and the
// backward is dbias = column sums of dy. Every storage dtype; out = 24 takes the 16-byte path, 17 the
// scalar one.
TEST(CudaNn, LinearWithoutInputFeaturesBroadcastsTheBias) {
  if (!gauge::gpu::available()) GTEST_SKIP() << gauge::gpu::unavailable_reason();
#if defined(GAUGE_HAS_CUDA) && GAUGE_HAS_CUDA
  Device d;
  for (const DType storage : {DType::f32, DType::bf16, DType::f16}) {
    for (const int64_t out : {int64_t{24}, int64_t{17}}) {
      SCOPED_TRACE(std::string(dtype_name(storage)) + ", out " + std::to_string(out));
      const ref::LinearShape s{5, 0, out};
      const size_t e = dtype_size(storage);
      // Any bit patterns: the bias is copied, never computed with.
      const HostTensor words = inputs::philox_u32("bits", {out}, inputs::kDefaultSeed, 11);
      HostTensor bias("bias", storage, {out});
      for (int64_t o = 0; o < out; ++o) {
        std::memcpy(static_cast<char*>(bias.data()) + o * static_cast<int64_t>(e), &words.view<uint32_t>()[static_cast<size_t>(o)], e);
      }
      const DeviceTensor db = d.up(bias);
      const DeviceTensor y = d.out("y", storage, {s.rows, out});
      opt::LinearPlan with_bias(d.session->blas_lt(), s, storage, true);
      with_bias.forward(nullptr, nullptr, db.ptr, y.ptr, nullptr, d.stream());
      const HostTensor got = d.down(y);
      for (int64_t r = 0; r < s.rows; ++r) {
        EXPECT_EQ(std::memcmp(static_cast<const char*>(got.data()) + r * out * static_cast<int64_t>(e), bias.data(),
                              bias.size_bytes()),
                  0)
            << "row " << r;
      }

      const DeviceTensor z = d.out("y", storage, {s.rows, out});
      opt::LinearPlan no_bias(d.session->blas_lt(), s, storage, false);
      no_bias.forward(nullptr, nullptr, nullptr, z.ptr, nullptr, d.stream());
      const HostTensor zeros = d.down(z);
      for (const unsigned char byte : zeros.view<unsigned char>()) ASSERT_EQ(byte, 0);
    }
  }

  const ref::LinearShape s{1000, 0, 45};
  const HostTensor dy = uniform("dy", {s.rows, s.out}, 3, -1, 1);
  std::vector<float> expected(static_cast<size_t>(s.out));
  ref::linear_backward(s, {}, {}, dy.view<float>(), {}, {}, expected);
  opt::LinearPlan plan(d.session->blas_lt(), s, DType::f32, true);
  void* ws = d.session->workspace(plan.workspace_bytes());
  const DeviceTensor ddy = d.up(dy), ddb = d.out("dbias", DType::f32, {s.out});
  plan.backward(nullptr, nullptr, ddy.ptr, nullptr, nullptr, static_cast<float*>(ddb.ptr), ws, d.stream());
  expect_close(d.down(ddb), expected, 1e-5, 1e-4, "dbias");
#endif
}

}  // namespace
}  // namespace gauge::suites::nn
