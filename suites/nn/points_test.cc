// The nn cases' declarations checked on the CPU beyond what every suite's conformance tests do:
// - every bf16 quick point's outputs are judged by rules that a straightforward fp32 implementation
//   meets (its faithful slot holds one, for fp32 outputs too), in the format the device will write;
// - an output under the faithful rule has a faithful reference that is the fp64 truth rounded once to
//   bf16 up to fp32-level error, so a wrong faithful formula cannot widen the bound;
// - the byte model of a bf16 point counts 2-byte storage (fewer bytes than the f32 point's);
// - the in == 0 Linear points run through the harness with zero-size tensors.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "harness/case.h"
#include "harness/compare.h"
#include "harness/inputs.h"

namespace gauge::suites::nn {
namespace {

std::vector<const CaseDecl*> nn_cases() {
  std::vector<const CaseDecl*> cases;
  for (const CaseDecl& decl : all_cases()) {
    if (decl.suite == "nn") cases.push_back(&decl);
  }
  return cases;
}

std::string id(const CaseDecl& decl, const Point& p) { return record_name(decl, p); }

// The layers the GPU bf16 recipe (optimized/precision/mlp_recipes.cu) runs in bf16, and their
// neighbours: each must have bf16 points.
TEST(NnPoints, EveryCaseHasBf16Points) {
  for (const CaseDecl* decl : nn_cases()) {
    const bool has_bf16 = std::any_of(decl->points.begin(), decl->points.end(),
                                      [](const Point& p) { return p.dtype == DType::bf16 && p.quick; });
    EXPECT_TRUE(has_bf16) << decl->full_name() << " has no quick bf16 point";
  }
}

TEST(NnPoints, Bf16OutputsAreJudgedByRulesPlainFp32Meets) {
  int checked = 0;
  for (const CaseDecl* decl : nn_cases()) {
    for (const Point& p : decl->points) {
      if (!p.quick || p.dtype != DType::bf16) continue;
      SCOPED_TRACE(id(*decl, p));
      const std::vector<HostTensor> in = decl->inputs(p, inputs::kDefaultSeed);
      const ReferenceResult r = decl->reference(p, in);
      const std::vector<ToleranceRule> rules = output_rules(*decl, p, r);
      ASSERT_EQ(rules.size(), r.outputs.size());
      for (size_t i = 0; i < r.outputs.size(); ++i) {
        const HostTensor& truth = r.outputs[i];
        const ToleranceRule& rule = rules[i];
        SCOPED_TRACE("output " + truth.name() + ": " + rule.describe());
        if (rule.kind == ToleranceRule::Kind::ulp) {
          // Bit-exact outputs (relu backward, dropout): the reference itself is in the storage format.
          EXPECT_EQ(truth.dtype(), DType::bf16);
          continue;
        }
        ASSERT_GT(r.faithful.size(), i) << "no plain fp32 evaluation to hold against the rule";
        const HostTensor& plain = r.faithful[i];
        ASSERT_EQ(plain.shape(), truth.shape());
        if (rule.kind == ToleranceRule::Kind::faithful) {
          // The device writes the faithful reference's format: bf16 after fp32 math.
          EXPECT_EQ(plain.dtype(), DType::bf16);
          EXPECT_EQ(rule.factor, 2.0);
          EXPECT_EQ(rule.atol, 0.0);
          // One bf16 rounding of a value within fp32-level error of the truth: |f - t| <= u(bf16) |t| +
          // 2^-16 max |t| (256 fp32 ulps of the largest value: far above these shallow fp32 evaluations'
          // error, a 128th of a bf16 half-ulp there).
          double largest = 0;
          for (int64_t k = 0; k < truth.numel(); ++k) largest = std::max(largest, std::fabs(truth.at_as_double(k)));
          int64_t off = 0;
          for (int64_t k = 0; k < truth.numel(); ++k) {
            const double t = truth.at_as_double(k), f = plain.at_as_double(k);
            if (std::fabs(f - t) > unit_roundoff(DType::bf16) * std::fabs(t) + std::ldexp(largest, -16)) ++off;
          }
          EXPECT_EQ(off, 0) << "elements of the faithful reference farther from the truth than one bf16 rounding";
        } else {
          // An fp32 output: the plain fp32 evaluation meets the accumulation rule.
          EXPECT_EQ(truth.dtype(), DType::f32);
          EXPECT_EQ(plain.dtype(), DType::f32);
          const Agreement a = compare(plain, truth, rule);
          EXPECT_TRUE(a.pass()) << a.report();
        }
        ++checked;
      }
    }
  }
  EXPECT_GT(checked, 0);
}

TEST(NnPoints, Bf16ByteModelsCountTwoByteStorage) {
  for (const CaseDecl* decl : nn_cases()) {
    for (const Point& narrow : decl->points) {
      if (narrow.dtype != DType::bf16) continue;
      for (const Point& wide : decl->points) {
        if (wide.dtype != DType::f32 || wide.shape != narrow.shape) continue;
        const CostModel a = decl->model(narrow), b = decl->model(wide);
        SCOPED_TRACE(id(*decl, narrow));
        EXPECT_EQ(a.flops, b.flops);
        if (b.bytes > 0) {
          EXPECT_LT(a.bytes, b.bytes);
          EXPECT_GE(a.bytes, b.bytes / 2);  // at best every byte halves
        }
      }
    }
  }
}

// A Linear without input features (the reference accepts in == 0): y = bias, dx and dw empty, dbias
// = column sums of dy, through the harness's zero-size tensors.
TEST(NnPoints, LinearWithoutInputFeatures) {
  int seen = 0;
  for (const CaseDecl* decl : nn_cases()) {
    if (decl->name != "linear_forward" && decl->name != "linear_backward") continue;
    for (const Point& p : decl->points) {
      if (p.dim("in") != 0) continue;
      SCOPED_TRACE(id(*decl, p));
      ++seen;
      const std::vector<HostTensor> in = decl->inputs(p, inputs::kDefaultSeed);
      const ReferenceResult r = decl->reference(p, in);
      const int64_t rows = p.dim("rows"), out = p.dim("out");
      EXPECT_EQ(in[0].numel(), 0);  // x
      EXPECT_EQ(in[1].numel(), 0);  // w
      if (decl->name == "linear_forward") {
        ASSERT_EQ(r.outputs.size(), 1u);
        for (int64_t row = 0; row < rows; ++row) {
          for (int64_t o = 0; o < out; ++o) {
            ASSERT_EQ(r.outputs[0].at_as_double(row * out + o), in[2].at_as_double(o)) << row << ", " << o;
          }
        }
        if (p.dtype == DType::bf16) {
          // Nothing is summed: the faithful error is 0, so the rule demands the bias exactly.
          const Agreement a = compare(r.faithful[0], r.outputs[0], output_rules(*decl, p, r)[0], &r.faithful[0]);
          EXPECT_TRUE(a.pass()) << a.report();
          EXPECT_EQ(a.faithful_max_abs_error, 0.0);
        }
      } else {
        ASSERT_EQ(r.outputs.size(), 3u);
        EXPECT_EQ(r.outputs[0].numel(), 0);  // dx [rows, 0]
        EXPECT_EQ(r.outputs[1].numel(), 0);  // dw [out, 0]
        for (int64_t o = 0; o < out; ++o) {
          double sum = 0;
          for (int64_t row = 0; row < rows; ++row) sum += in[2].at_as_double(row * out + o);
          EXPECT_EQ(r.outputs[2].at_as_double(o), static_cast<double>(static_cast<float>(sum))) << o;
        }
      }
      const CostModel m = decl->model(p);
      EXPECT_EQ(m.bound, Bound::memory);
    }
  }
  EXPECT_EQ(seen, 8);  // two shapes x two dtypes x forward and backward
}

}  // namespace
}  // namespace gauge::suites::nn
