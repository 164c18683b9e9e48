#include <gtest/gtest.h>

#include "harness/case.h"
#include "harness/error.h"
#include "harness/inputs.h"
#include "harness/runner.h"

namespace gauge {
namespace {

// A tiny case declared in the test itself: y = 2x, reference only.
GAUGE_REGISTER_CASE({
    .suite = "harness_selftest",
    .name = "double_it",
    .description = "y = 2 x",
    .points = grid({{{{"n", 100}}, true}, {{{"n", 1000}}, false}}, {DType::f32}),
    .model =
        [](const Point& p) {
          CostModel m;
          m.flops = static_cast<double>(p.dim("n"));
          m.bytes = 8.0 * static_cast<double>(p.dim("n"));
          m.predicted_host_peak_bytes = 8 * p.dim("n");
          m.predicted_counters = {{"doublings", static_cast<double>(p.dim("n"))}};
          return m;
        },
    .tolerance = [](const Point&) { return tolerance::exact_bits(); },
    .inputs =
        [](const Point& p, uint64_t seed) {
          return std::vector<HostTensor>{inputs::uniform_f32("x", {p.dim("n")}, seed, 0, -1, 1)};
        },
    .reference =
        [](const Point&, const std::vector<HostTensor>& in) {
          HostTensor y("y", DType::f32, in[0].shape());
          for (size_t i = 0; i < y.view<float>().size(); ++i) y.view<float>()[i] = 2 * in[0].view<float>()[i];
          ReferenceResult r;
          r.counters.push_back({"doublings", static_cast<double>(y.numel())});
          r.outputs.push_back(std::move(y));
          return r;
        },
});

TEST(Cases, GridCrossesShapesAndDtypes) {
  const std::vector<Point> points = grid({{{{"m", 2}, {"n", 3}}, true}}, {DType::bf16, DType::f16});
  ASSERT_EQ(points.size(), 2u);
  EXPECT_EQ(points[0].shape, "m=2,n=3");
  EXPECT_EQ(points[1].dtype, DType::f16);
  EXPECT_EQ(points[0].dim("n"), 3);
  EXPECT_THROW((void)points[0].dim("k"), UsageError);
}

TEST(Cases, SelectionBySuiteFilterAndQuick) {
  EXPECT_EQ(select_cases("harness_selftest", "", false).at(0).points.size(), 2u);
  EXPECT_EQ(select_cases("harness_selftest", "", true).at(0).points.size(), 1u);
  EXPECT_EQ(select_cases("harness_selftest", "n=1000", false).at(0).points.size(), 1u);
  EXPECT_THROW(select_cases("no_such_suite", "", false), UsageError);
  EXPECT_THROW(select_cases("harness_selftest", "matches-nothing", false), UsageError);
  EXPECT_THROW(select_cases("harness_selftest", "([", false), UsageError);
}

TEST(Cases, DeclarationsAreValidated) {
  EXPECT_THROW(register_case(CaseDecl{.suite = "x", .name = "incomplete"}), std::logic_error);
  const CaseDecl* existing = find_case("harness_selftest/double_it");
  ASSERT_NE(existing, nullptr);
  EXPECT_THROW(register_case(*existing), std::logic_error) << "duplicate names are refused";
}

TEST(Runner, ReferenceRecordCarriesTimingThroughputAndMeasuredMemory) {
  RunOptions options;
  options.repetitions = 3;
  options.min_seconds_per_repetition = 0.001;
  Runner runner(probe_machine({}), options);
  const CaseDecl& decl = *find_case("harness_selftest/double_it");
  const PointOutcome outcome = runner.evaluate_point(decl, decl.points[1]);
  const Record& r = outcome.reference;
  EXPECT_EQ(r.status, RecordStatus::ok) << r.note;
  ASSERT_TRUE(r.timing.has_value());
  EXPECT_EQ(r.timing->repetition_seconds.size(), 3u);
  EXPECT_GT(r.timing->median_seconds, 0);
  ASSERT_TRUE(r.throughput.has_value());
  EXPECT_GT(r.throughput->gbytes_per_s, 0);
  EXPECT_FALSE(r.throughput->fraction_of_peak.has_value()) << "no CPU peak: no fraction";
  ASSERT_TRUE(r.memory.has_value());
  // 1000 fp32 in + 1000 fp32 out, measured by the counting allocator.
  EXPECT_EQ(r.memory->measured_peak_bytes, 8000);
  EXPECT_EQ(r.memory->predicted_peak_bytes, 8000);
  ASSERT_EQ(r.counters.size(), 1u);
  EXPECT_EQ(r.counters[0].name, "doublings");
  EXPECT_EQ(r.counters[0].measured, 1000);
  EXPECT_EQ(r.counters[0].predicted, 1000);
  ASSERT_TRUE(outcome.optimized.has_value());
  if (!gpu::available()) {
    EXPECT_EQ(outcome.optimized->status, RecordStatus::no_cuda_device);
    EXPECT_FALSE(outcome.optimized->timing.has_value());
  } else {
    EXPECT_EQ(outcome.optimized->status, RecordStatus::not_implemented);
  }
  EXPECT_NE(google_benchmark_json().find("harness_selftest/double_it"), std::string::npos);
}

}  // namespace
}  // namespace gauge
