// main() of every suite's test executable: besides the suite's own tests, it registers one
// conformance test per declared (case, point, implementation) of the suite, so the declaration that
// drives the benchmark also drives ctest.
#include <gtest/gtest.h>

#include <cctype>
#include <string>

#include "harness/device.h"
#include "harness/gpu.h"
#include "harness/runner.h"

namespace {

std::string identifier(const std::string& text) {
  std::string out;
  for (char c : text) out += std::isalnum(static_cast<unsigned char>(c)) ? c : '_';
  return out;
}

gauge::Runner& conformance_runner() {
  static gauge::Runner runner = [] {
    gauge::RunOptions options;
    options.time = false;
    return gauge::Runner(gauge::probe_machine({}), options);
  }();
  return runner;
}

class ReferenceConformance : public testing::Test {
 public:
  ReferenceConformance(const gauge::CaseDecl* decl, const gauge::Point* point) : decl_(decl), point_(point) {}
  void TestBody() override {
    // The reference is the definition of correct (the suite's own tests check its values); here the
    // declaration must run end to end and the reference must be deterministic.
    const auto inputs = decl_->inputs(*point_, gauge::inputs::kDefaultSeed);
    const gauge::ReferenceResult first = decl_->reference(*point_, inputs);
    const gauge::ReferenceResult second = decl_->reference(*point_, inputs);
    ASSERT_FALSE(first.outputs.empty()) << "the reference produced no output";
    ASSERT_EQ(first.outputs.size(), second.outputs.size());
    for (size_t i = 0; i < first.outputs.size(); ++i) {
      const gauge::Agreement same = gauge::compare(second.outputs[i], first.outputs[i], gauge::tolerance::exact_bits());
      EXPECT_TRUE(same.pass()) << "the reference is not deterministic:\n" << same.report();
    }
    // Every output has a rule, and one under the faithful rule has its faithful reference output.
    EXPECT_NO_THROW(gauge::output_rules(*decl_, *point_, first));
  }

 private:
  const gauge::CaseDecl* decl_;
  const gauge::Point* point_;
};

class OptimizedConformance : public testing::Test {
 public:
  OptimizedConformance(const gauge::CaseDecl* decl, const gauge::Point* point) : decl_(decl), point_(point) {}
  void TestBody() override {
    if (!gauge::gpu::available()) GTEST_SKIP() << "no CUDA device: " << gauge::gpu::unavailable_reason();
    if (!decl_->optimized) GTEST_SKIP() << "the case has no optimized implementation";
    const gauge::PointOutcome outcome = conformance_runner().evaluate_point(*decl_, *point_);
    ASSERT_TRUE(outcome.optimized.has_value());
    const gauge::Record& r = *outcome.optimized;
    if (r.status == gauge::RecordStatus::unsupported_device) GTEST_SKIP() << "this device cannot run the case: " << r.note;
    ASSERT_NE(r.status, gauge::RecordStatus::error) << r.note;
    for (const gauge::Agreement& a : r.agreement) EXPECT_TRUE(a.pass()) << a.report();
    EXPECT_EQ(r.status, gauge::RecordStatus::ok) << r.note;
  }

 private:
  const gauge::CaseDecl* decl_;
  const gauge::Point* point_;
};

void register_conformance_tests(const std::string& suite) {
  for (const gauge::CaseDecl& decl : gauge::all_cases()) {
    if (decl.suite != suite) continue;
    for (const gauge::Point& point : decl.points) {
      if (!point.quick) continue;
      const std::string test_suite = "Conformance_" + identifier(decl.name);
      const std::string point_name = identifier(point.shape + "_" + std::string(gauge::dtype_name(point.dtype)));
      testing::RegisterTest(test_suite.c_str(), (point_name + "_reference").c_str(), nullptr, nullptr, __FILE__,
                            __LINE__, [d = &decl, p = &point]() -> testing::Test* {
                              return new ReferenceConformance(d, p);
                            });
      testing::RegisterTest(test_suite.c_str(), (point_name + "_optimized").c_str(), nullptr, nullptr, __FILE__,
                            __LINE__, [d = &decl, p = &point]() -> testing::Test* {
                              return new OptimizedConformance(d, p);
                            });
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  testing::InitGoogleTest(&argc, argv);
  register_conformance_tests(GAUGE_SUITE_NAME);
  return RUN_ALL_TESTS();
}
