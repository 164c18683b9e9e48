// The per-output rules of the multi-output f32 nn points (linear_backward, layernorm / rmsnorm forward and
// backward, softmax_ce_forward), checked on the CPU:
// - not false: a plain fp32 evaluation written here (loops in index order from the declared inputs; it
//   shares nothing with optimized/ or with cases.cc's bf16 evaluations) meets every output's rule on
//   every quick point; the share of the bound it used is printed;
// - not vacuous: the same evaluation with one plausible bug planted in one output (a dropped term, a
//   row's statistics from half of it, the wrong label, n - 1 for n) fails that output's rule;
// - never looser than the former single rule of the point, for each output;
// - the assumptions the norm derivations make on the declared inputs (|mean| < 0.1, variance or mean
//   square > 1/4, so rstd < 2 and |xhat| < 2.2) hold on the quick points.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

#include "harness/case.h"
#include "harness/compare.h"
#include "harness/inputs.h"

namespace gauge::suites::nn {
namespace {

constexpr float kEps = 1e-5f;  // the cases' NormShape eps

const CaseDecl& nn_case(const std::string& name) {
  const CaseDecl* decl = find_case("nn/" + name);
  if (decl == nullptr) throw std::logic_error("no case nn/" + name);
  return *decl;
}

HostTensor f32(const std::string& name, Shape shape, const std::vector<float>& v) {
  HostTensor t(name, DType::f32, std::move(shape));
  std::copy(v.begin(), v.end(), t.view<float>().begin());
  return t;
}

size_t at(int64_t i) { return static_cast<size_t>(i); }

// ---- Plain fp32 evaluations; `planted` names the output that gets its bug ("" for none) ---------------

std::vector<HostTensor> linear_backward_fp32(const Point& p, const std::vector<HostTensor>& in, const std::string& planted) {
  const int64_t rows = p.dim("rows"), nin = p.dim("in"), out = p.dim("out");
  const auto x = in[0].view<float>(), w = in[1].view<float>(), dy = in[2].view<float>();
  std::vector<float> dx(at(rows * nin)), dw(at(out * nin)), db(at(out));
  const int64_t dx_terms = planted == "dx" ? out - 1 : out;  // bug: the last output feature dropped
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t i = 0; i < nin; ++i) {
      float sum = 0.0f;
      for (int64_t o = 0; o < dx_terms; ++o) sum += dy[at(r * out + o)] * w[at(o * nin + i)];
      dx[at(r * nin + i)] = sum;
    }
  }
  const int64_t dw_rows = planted == "dw" ? rows - 1 : rows;  // bug: the last row dropped
  for (int64_t o = 0; o < out; ++o) {
    for (int64_t i = 0; i < nin; ++i) {
      float sum = 0.0f;
      for (int64_t r = 0; r < dw_rows; ++r) sum += dy[at(r * out + o)] * x[at(r * nin + i)];
      dw[at(o * nin + i)] = sum;
    }
  }
  const int64_t db_rows = planted == "dbias" ? rows - 1 : rows;
  for (int64_t o = 0; o < out; ++o) {
    float sum = 0.0f;
    for (int64_t r = 0; r < db_rows; ++r) sum += dy[at(r * out + o)];
    db[at(o)] = sum;
  }
  return {f32("dx", {rows, nin}, dx), f32("dw", {out, nin}, dw), f32("dbias", {out}, db)};
}

std::vector<HostTensor> norm_forward_fp32(const Point& p, const std::vector<HostTensor>& in, bool layernorm,
                                          const std::string& planted) {
  const int64_t rows = p.dim("rows"), cols = p.dim("cols");
  const auto x = in[0].view<float>(), gamma = in[1].view<float>();
  std::vector<float> y(at(rows * cols)), mean(at(rows)), rstd(at(rows));
  // The planted bug: the row's statistics from its first half only (a block that covers half the row).
  const int64_t half = (cols + 1) / 2;
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x.data() + r * cols;
    const auto statistics = [&](int64_t count) {
      float mu = 0.0f;
      if (layernorm) {
        float sum = 0.0f;
        for (int64_t c = 0; c < count; ++c) sum += xr[c];
        mu = sum / static_cast<float>(count);
      }
      float squares = 0.0f;
      for (int64_t c = 0; c < count; ++c) squares += (xr[c] - mu) * (xr[c] - mu);
      return std::pair{mu, 1.0f / std::sqrt(squares / static_cast<float>(count) + kEps)};
    };
    const auto [mu, inv] = statistics(cols);
    const auto [mu_planted, inv_planted] = statistics(half);
    const float inv_y = planted == "y" ? inv_planted : inv;
    for (int64_t c = 0; c < cols; ++c) {
      y[at(r * cols + c)] = layernorm ? (xr[c] - mu) * inv_y * gamma[at(c)] + in[2].view<float>()[at(c)]
                                      : xr[c] * inv_y * gamma[at(c)];
    }
    mean[at(r)] = planted == "mean" ? mu_planted : mu;
    rstd[at(r)] = planted == "rstd" ? inv_planted : inv;
  }
  std::vector<HostTensor> outputs;
  outputs.push_back(f32("y", {rows, cols}, y));
  if (layernorm) outputs.push_back(f32("mean", {rows}, mean));
  outputs.push_back(f32("rstd", {rows}, rstd));
  return outputs;
}

std::vector<HostTensor> norm_backward_fp32(const Point& p, const std::vector<HostTensor>& in, bool layernorm,
                                           const std::string& planted) {
  const int64_t rows = p.dim("rows"), cols = p.dim("cols");
  // LayerNorm: x, gamma, mean, rstd, dy; RMSNorm: x, gamma, rstd, dy.
  const auto x = in[0].view<float>(), gamma = in[1].view<float>();
  const auto rstd = in[layernorm ? 3 : 2].view<float>(), dy = in[layernorm ? 4 : 3].view<float>();
  std::vector<float> dx(at(rows * cols)), dgamma(at(cols), 0.0f), dbeta(at(cols), 0.0f);
  const auto n = static_cast<float>(cols);
  const int64_t row_terms = planted == "dx" ? (cols + 1) / 2 : cols;  // bug: row sums over the first half only
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x.data() + r * cols;
    const float* dyr = dy.data() + r * cols;
    const float mu = layernorm ? in[2].view<float>()[at(r)] : 0.0f;
    const float inv = rstd[at(r)];
    float g_sum = 0.0f, gx_sum = 0.0f;
    for (int64_t c = 0; c < row_terms; ++c) {
      const float g = dyr[c] * gamma[at(c)];
      g_sum += g;
      gx_sum += g * ((xr[c] - mu) * inv);
    }
    const float g_mean = layernorm ? g_sum / n : 0.0f, gx_mean = gx_sum / n;
    for (int64_t c = 0; c < cols; ++c) {
      const float xhat = (xr[c] - mu) * inv;
      dx[at(r * cols + c)] = inv * (dyr[c] * gamma[at(c)] - g_mean - xhat * gx_mean);
    }
  }
  const int64_t dgamma_rows = planted == "dgamma" ? rows - 1 : rows;  // bug: the last row dropped
  const int64_t dbeta_rows = planted == "dbeta" ? rows - 1 : rows;
  for (int64_t r = 0; r < rows; ++r) {
    const float mu = layernorm ? in[2].view<float>()[at(r)] : 0.0f;
    for (int64_t c = 0; c < cols; ++c) {
      const float d = dy[at(r * cols + c)];
      if (r < dgamma_rows) dgamma[at(c)] += d * ((x[at(r * cols + c)] - mu) * rstd[at(r)]);
      if (r < dbeta_rows) dbeta[at(c)] += d;
    }
  }
  std::vector<HostTensor> outputs;
  outputs.push_back(f32("dx", {rows, cols}, dx));
  outputs.push_back(f32("dgamma", {cols}, dgamma));
  if (layernorm) outputs.push_back(f32("dbeta", {cols}, dbeta));
  return outputs;
}

std::vector<HostTensor> softmax_forward_fp32(const Point& p, const std::vector<HostTensor>& in, const std::string& planted) {
  const int64_t rows = p.dim("rows"), classes = p.dim("classes");
  const auto logits = in[0].view<float>();
  const auto labels = in[1].view<int32_t>();
  std::vector<float> losses(at(rows));
  float total = 0.0f;
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = logits.data() + r * classes;
    float m = xr[0];
    for (int64_t c = 1; c < classes; ++c) m = std::max(m, xr[c]);
    float sum = 0.0f;
    for (int64_t c = 0; c < classes; ++c) sum += std::exp(xr[c] - m);
    const int64_t label = labels[at(r)];
    const float loss = (m - xr[label]) + std::log(sum);
    // bug: the neighbouring class's logit
    losses[at(r)] = planted == "row_losses" ? (m - xr[(label + 1) % classes]) + std::log(sum) : loss;
    total += loss;
  }
  const float mean = total / static_cast<float>(planted == "mean_loss" ? rows - 1 : rows);  // bug: n - 1 for n
  return {f32("row_losses", {rows}, losses), f32("mean_loss", {1}, {mean})};
}

struct Subject {
  std::string name;
  std::vector<HostTensor> (*evaluate)(const Point&, const std::vector<HostTensor>&, const std::string&);
};

const std::vector<Subject>& subjects() {
  static const std::vector<Subject> list = {
      {"linear_backward", linear_backward_fp32},
      {"layernorm_forward", [](const Point& p, const std::vector<HostTensor>& in,
                               const std::string& planted) { return norm_forward_fp32(p, in, true, planted); }},
      {"rmsnorm_forward", [](const Point& p, const std::vector<HostTensor>& in,
                             const std::string& planted) { return norm_forward_fp32(p, in, false, planted); }},
      {"layernorm_backward", [](const Point& p, const std::vector<HostTensor>& in,
                                const std::string& planted) { return norm_backward_fp32(p, in, true, planted); }},
      {"rmsnorm_backward", [](const Point& p, const std::vector<HostTensor>& in,
                              const std::string& planted) { return norm_backward_fp32(p, in, false, planted); }},
      {"softmax_ce_forward", softmax_forward_fp32},
  };
  return list;
}

// The largest |actual - expected| / bound over the elements (abs_rel); 0 or +Inf for a bit-exact rule.
double used_fraction(const HostTensor& actual, const HostTensor& expected, const ToleranceRule& rule) {
  double used = 0.0;
  for (int64_t k = 0; k < expected.numel(); ++k) {
    const double a = actual.at_as_double(k), e = expected.at_as_double(k);
    if (rule.kind == ToleranceRule::Kind::ulp) {
      if (actual.view<float>()[at(k)] != expected.view<float>()[at(k)]) used = HUGE_VAL;
      continue;
    }
    const double bound = rule.atol + rule.rtol * std::fabs(e);
    const double error = std::fabs(a - e);
    used = std::max(used, bound > 0 ? error / bound : (error > 0 ? HUGE_VAL : 0.0));
  }
  return used;
}

struct Evaluated {
  std::vector<HostTensor> inputs;
  ReferenceResult reference;
  std::vector<ToleranceRule> rules;
};

Evaluated evaluate(const CaseDecl& decl, const Point& p) {
  Evaluated e;
  e.inputs = decl.inputs(p, inputs::kDefaultSeed);
  e.reference = decl.reference(p, e.inputs);
  e.rules = output_rules(decl, p, e.reference);
  return e;
}

std::vector<const Point*> quick_f32_points(const CaseDecl& decl) {
  std::vector<const Point*> points;
  for (const Point& p : decl.points) {
    if (p.quick && p.dtype == DType::f32) points.push_back(&p);
  }
  return points;
}

TEST(NnF32Rules, PlainFp32MeetsEveryOutputsRule) {
  int checked = 0;
  for (const Subject& s : subjects()) {
    const CaseDecl& decl = nn_case(s.name);
    for (const Point* p : quick_f32_points(decl)) {
      SCOPED_TRACE(record_name(decl, *p));
      const Evaluated e = evaluate(decl, *p);
      const std::vector<HostTensor> plain = s.evaluate(*p, e.inputs, "");
      ASSERT_EQ(plain.size(), e.reference.outputs.size());
      for (size_t i = 0; i < plain.size(); ++i) {
        const HostTensor& truth = e.reference.outputs[i];
        ASSERT_EQ(plain[i].name(), truth.name());
        SCOPED_TRACE("output " + truth.name() + ": " + e.rules[i].describe());
        const Agreement a = compare(plain[i], truth, e.rules[i]);
        EXPECT_TRUE(a.pass()) << a.report();
        std::printf("%-58s %-10s used %.4f of the bound (%s)\n", record_name(decl, *p).c_str(), truth.name().c_str(),
                    used_fraction(plain[i], truth, e.rules[i]), e.rules[i].kind == ToleranceRule::Kind::ulp ? "bit-exact" : "abs_rel");
        ++checked;
      }
    }
  }
  EXPECT_EQ(checked, 3 * 4 + 3 * 3 + 2 * 3 + 3 * 3 + 2 * 3 + 2 * 2);
}

TEST(NnF32Rules, PlantedErrorFailsThatOutputsRule) {
  for (const Subject& s : subjects()) {
    const CaseDecl& decl = nn_case(s.name);
    for (const Point* p : quick_f32_points(decl)) {
      SCOPED_TRACE(record_name(decl, *p));
      const Evaluated e = evaluate(decl, *p);
      for (size_t i = 0; i < e.reference.outputs.size(); ++i) {
        const HostTensor& truth = e.reference.outputs[i];
        if (truth.numel() == 0) continue;  // dx, dw of a Linear without input features
        SCOPED_TRACE("planted in " + truth.name() + ": " + e.rules[i].describe());
        const std::vector<HostTensor> planted = s.evaluate(*p, e.inputs, truth.name());
        const Agreement a = compare(planted[i], truth, e.rules[i]);
        EXPECT_FALSE(a.pass()) << "the planted bug passes the rule";
        std::printf("%-58s %-10s planted: %.3g x the bound\n", record_name(decl, *p).c_str(), truth.name().c_str(),
                    used_fraction(planted[i], truth, e.rules[i]));
        // The other outputs are untouched and still pass.
        for (size_t j = 0; j < planted.size(); ++j) {
          if (j == i) continue;
          EXPECT_TRUE(compare(planted[j], e.reference.outputs[j], e.rules[j]).pass()) << planted[j].name();
        }
      }
    }
  }
}

// The single rule each of these points had before its outputs got their own.
ToleranceRule former_rule(const std::string& name, const Point& p) {
  if (name == "linear_backward") {
    const int64_t depth = std::max(p.dim("rows"), p.dim("out"));
    return tolerance::accumulation(DType::f32, DType::f32, depth, static_cast<double>(depth));
  }
  if (name == "softmax_ce_forward") {
    return tolerance::accumulation(DType::f32, DType::f32, 6 * p.dim("classes") + p.dim("rows") + 16, 1.0);
  }
  if (name.ends_with("_forward")) return tolerance::accumulation(DType::f32, DType::f32, 2 * p.dim("cols") + 8, 4.0);
  const int64_t wide = std::max(p.dim("rows"), p.dim("cols"));
  return tolerance::accumulation(DType::f32, DType::f32, 2 * wide + 8, 4.0 * static_cast<double>(wide));
}

TEST(NnF32Rules, NoOutputLooserThanThePointsFormerRule) {
  for (const Subject& s : subjects()) {
    const CaseDecl& decl = nn_case(s.name);
    for (const Point& p : decl.points) {  // full points too: the rules are formulas of the shape
      if (p.dtype != DType::f32) continue;
      SCOPED_TRACE(record_name(decl, p));
      const ToleranceRule former = former_rule(s.name, p);
      int tighter = 0;
      const std::vector<std::string> names =
          s.name == "linear_backward"      ? std::vector<std::string>{"dx", "dw", "dbias"}
          : s.name == "layernorm_forward"  ? std::vector<std::string>{"y", "mean", "rstd"}
          : s.name == "rmsnorm_forward"    ? std::vector<std::string>{"y", "rstd"}
          : s.name == "layernorm_backward" ? std::vector<std::string>{"dx", "dgamma", "dbeta"}
          : s.name == "rmsnorm_backward"   ? std::vector<std::string>{"dx", "dgamma"}
                                           : std::vector<std::string>{"row_losses", "mean_loss"};
      for (const std::string& output : names) {
        const ToleranceRule rule = output_rule(decl, p, output);
        SCOPED_TRACE(output + ": " + rule.describe());
        EXPECT_FALSE(rule.derivation.empty());
        if (rule.kind == ToleranceRule::Kind::ulp) {
          EXPECT_EQ(rule.max_ulps, 0);
          ++tighter;
          continue;
        }
        ASSERT_EQ(rule.kind, ToleranceRule::Kind::abs_rel);
        EXPECT_LE(rule.rtol, former.rtol);
        EXPECT_LE(rule.atol, former.atol);
        if (rule.rtol < former.rtol || rule.atol < former.atol) ++tighter;
      }
      EXPECT_GT(tighter, 0) << "no output's rule got tighter";
    }
  }
}

// |mean| < 0.1 and variance (LayerNorm) or mean square (RMSNorm) > 1/4 per row of the declared x; the
// backward's given rstd < 2 and |xhat| < 2.2.
TEST(NnF32Rules, NormDerivationsAssumptionsHoldOnTheDeclaredInputs) {
  for (const std::string name : {"layernorm_forward", "rmsnorm_forward", "layernorm_backward", "rmsnorm_backward"}) {
    const CaseDecl& decl = nn_case(name);
    const bool layernorm = name.starts_with("layernorm");
    for (const Point* p : quick_f32_points(decl)) {
      SCOPED_TRACE(record_name(decl, *p));
      const std::vector<HostTensor> in = decl.inputs(*p, inputs::kDefaultSeed);
      const int64_t rows = p->dim("rows"), cols = p->dim("cols");
      const auto x = in[0].view<float>();
      double largest_xhat = 0.0, largest_rstd = 0.0;
      for (int64_t r = 0; r < rows; ++r) {
        double sum = 0.0, squares = 0.0;
        for (int64_t c = 0; c < cols; ++c) sum += x[at(r * cols + c)];
        const double mu = sum / static_cast<double>(cols);
        const double center = layernorm ? mu : 0.0;
        for (int64_t c = 0; c < cols; ++c) squares += (x[at(r * cols + c)] - center) * (x[at(r * cols + c)] - center);
        EXPECT_LT(std::fabs(mu), 0.1) << "row " << r;
        EXPECT_GT(squares / static_cast<double>(cols), 0.25) << "row " << r;
        double rstd = 1.0 / std::sqrt(squares / static_cast<double>(cols) + kEps);
        double given_mean = center;
        if (name.ends_with("_backward")) {
          rstd = in[layernorm ? 3 : 2].view<float>()[at(r)];
          if (layernorm) given_mean = in[2].view<float>()[at(r)];
        }
        largest_rstd = std::max(largest_rstd, rstd);
        for (int64_t c = 0; c < cols; ++c) {
          largest_xhat = std::max(largest_xhat, std::fabs((x[at(r * cols + c)] - given_mean) * rstd));
        }
      }
      EXPECT_LT(largest_rstd, 2.0);
      EXPECT_LT(largest_xhat, layernorm ? 2.2 : 2.0);
      std::printf("%-58s max rstd %.4f, max |xhat| %.4f\n", record_name(decl, *p).c_str(), largest_rstd, largest_xhat);
    }
  }
}

}  // namespace
}  // namespace gauge::suites::nn
