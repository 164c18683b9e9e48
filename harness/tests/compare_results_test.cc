#include "harness/compare_results.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <sstream>
#include <string>
#include <vector>

#include "harness/error.h"

namespace gauge {
namespace {

// ---- Mann-Whitney U -------------------------------------------------------------------------------

TEST(MannWhitney, CompleteSeparation) {
  // Every b exceeds every a: U = 5 * 5 = 25. mu = 12.5, sigma^2 = 25/12 * 11 = 22.9167,
  // z = (25 - 12.5 - 0.5) / 4.78714 = 2.50672, p = erfc(z / sqrt 2) / 2 = 0.0060929.
  const MannWhitneyResult r = mann_whitney_u({1, 2, 3, 4, 5}, {6, 7, 8, 9, 10});
  EXPECT_DOUBLE_EQ(r.u, 25);
  EXPECT_NEAR(r.z, 2.5067182457620487, 1e-12);
  EXPECT_NEAR(r.p_greater, 0.006092890177672409, 1e-12);

  // The other way round nothing suggests b is larger: U = 0, p near 1.
  const MannWhitneyResult reversed = mann_whitney_u({6, 7, 8, 9, 10}, {1, 2, 3, 4, 5});
  EXPECT_DOUBLE_EQ(reversed.u, 0);
  EXPECT_NEAR(reversed.p_greater, 0.9966923245172357, 1e-12);
}

TEST(MannWhitney, TiesUseMidranksAndTheTieCorrection) {
  // Pooled and sorted: 1a 2a 2a 2b 3a 3b 3b 4b. The 2s share ranks 2..4 (midrank 3), the 3s ranks
  // 5..7 (midrank 6). R_b = 3 + 6 + 6 + 8 = 23, U = 23 - 4*5/2 = 13 (pairwise: 2 + 3.5 + 3.5 + 4).
  // Tie term: two runs of 3, 2 * (27 - 3) = 48. sigma^2 = 16/12 * (9 - 48/56) = 10.857143,
  // z = (13 - 8 - 0.5) / 3.295018 = 1.365698, p = 0.0860169.
  const MannWhitneyResult r = mann_whitney_u({1, 2, 2, 3}, {2, 3, 3, 4});
  EXPECT_DOUBLE_EQ(r.u, 13);
  EXPECT_NEAR(r.z, 1.365698202000489, 1e-12);
  EXPECT_NEAR(r.p_greater, 0.08601685446091148, 1e-12);
}

TEST(MannWhitney, AllTiedOrEmptyGivesNoEvidence) {
  const MannWhitneyResult tied = mann_whitney_u({2, 2, 2}, {2, 2});
  EXPECT_DOUBLE_EQ(tied.u, 3);  // every pair a tie: 6 pairs * 1/2
  EXPECT_EQ(tied.z, 0);
  EXPECT_EQ(tied.p_greater, 1);
  EXPECT_EQ(mann_whitney_u({}, {1, 2}).p_greater, 1);
}

// ---- compare_results ------------------------------------------------------------------------------

TimingStats timing_of(std::vector<double> seconds) {
  TimingStats t;
  t.clock = "cuda_events";
  t.iterations_per_repetition = 100;
  t.repetition_seconds = seconds;
  std::sort(seconds.begin(), seconds.end());
  const size_t n = seconds.size();
  t.median_seconds = n % 2 == 1 ? seconds[n / 2] : (seconds[n / 2 - 1] + seconds[n / 2]) / 2;
  t.min_seconds = seconds.front();
  return t;
}

Record untimed_record(const std::string& case_name, RecordStatus status) {
  Record r;
  r.suite = "precision";
  r.case_name = case_name;
  r.shape = "n=1048576";
  r.dims = {{"n", 1048576}};
  r.dtype = "bf16";
  r.impl = "optimized";
  r.device = "cuda:0";
  r.status = status;
  return r;
}

Record timed_record(const std::string& case_name, std::vector<double> seconds) {
  Record r = untimed_record(case_name, RecordStatus::ok);
  r.timing = timing_of(std::move(seconds));
  return r;
}

ResultsFile results_on(const std::string& gpu_name, std::vector<Record> records) {
  ResultsFile f;
  f.created_utc = "2026-11-23T09:41:00Z";
  f.machine = {
      {"host", "node"},
      {"gpu", gpu_name.empty() ? nlohmann::ordered_json(nullptr) : nlohmann::ordered_json{{"name", gpu_name}}}};
  f.records = std::move(records);
  return f;
}

// 10 repetitions spread +-0.9% around `center`, their median.
std::vector<double> low_noise(double center) {
  std::vector<double> seconds;
  for (int i = 0; i < 10; ++i) seconds.push_back(center * (1 + 0.002 * (i - 4.5)));
  return seconds;
}

std::vector<double> scaled(std::vector<double> seconds, double factor) {
  for (double& s : seconds) s *= factor;
  return seconds;
}

const ComparedRow& row_for(const ComparisonReport& report, const std::string& case_name) {
  for (const ComparedRow& row : report.rows) {
    if (row.key.find("/" + case_name + "/") != std::string::npos) return row;
  }
  throw std::runtime_error("no row for " + case_name);
}

TEST(CompareResults, IdenticalFilesHaveNoRegressions) {
  const ResultsFile file =
      results_on("NVIDIA H100 80GB HBM3", {timed_record("a", low_noise(1e-3)), timed_record("b", {2e-6, 2.1e-6})});
  const ComparisonReport report = compare_results(file, file, {});
  EXPECT_EQ(report.regressions, 0);
  ASSERT_EQ(report.rows.size(), 2u);
  for (const ComparedRow& row : report.rows) {
    EXPECT_EQ(row.verdict, Verdict::same) << row.key;
    EXPECT_DOUBLE_EQ(row.ratio, 1.0);
  }
  EXPECT_EQ(row_for(report, "a").method, "mann-whitney");
  EXPECT_EQ(row_for(report, "b").method, "threshold");
}

TEST(CompareResults, ClearSlowdownIsARegression) {
  const ResultsFile base = results_on("H100", {timed_record("a", low_noise(1e-3))});
  const ResultsFile next = results_on("H100", {timed_record("a", scaled(low_noise(1e-3), 1.2))});
  const ComparisonReport report = compare_results(base, next, {});
  const ComparedRow& row = row_for(report, "a");
  EXPECT_EQ(row.verdict, Verdict::slower);
  EXPECT_EQ(row.method, "mann-whitney");
  EXPECT_NEAR(row.ratio, 1.2, 1e-12);
  EXPECT_LT(row.p_value, 0.01);
  EXPECT_EQ(report.regressions, 1);
}

TEST(CompareResults, ClearSpeedupIsNotARegression) {
  const ResultsFile base = results_on("H100", {timed_record("a", low_noise(1e-3))});
  const ResultsFile next = results_on("H100", {timed_record("a", scaled(low_noise(1e-3), 0.8))});
  const ComparisonReport report = compare_results(base, next, {});
  EXPECT_EQ(row_for(report, "a").verdict, Verdict::faster);
  EXPECT_LT(row_for(report, "a").p_value, 0.01);
  EXPECT_EQ(report.regressions, 0);
}

TEST(CompareResults, SlowerMedianWithinNoiseIsTheSame) {
  // Two wide, overlapping spreads whose medians differ by 20%.
  const std::vector<double> base_times = {0.5e-3, 2.0e-3, 0.6e-3, 1.9e-3, 0.7e-3,
                                          1.8e-3, 1.0e-3, 1.5e-3, 0.8e-3, 1.6e-3};
  const std::vector<double> new_times = {0.5e-3, 2.0e-3, 0.6e-3, 1.9e-3, 0.7e-3,
                                         1.8e-3, 1.4e-3, 1.6e-3, 0.8e-3, 1.7e-3};
  const ResultsFile base = results_on("H100", {timed_record("a", base_times)});
  const ResultsFile next = results_on("H100", {timed_record("a", new_times)});
  const ComparisonReport report = compare_results(base, next, {});
  const ComparedRow& row = row_for(report, "a");
  ASSERT_NEAR(row.ratio, 1.2, 1e-12);
  EXPECT_EQ(row.method, "mann-whitney");
  EXPECT_GE(row.p_value, 0.01);
  EXPECT_EQ(row.verdict, Verdict::same);
  EXPECT_EQ(report.regressions, 0);
}

TEST(CompareResults, FewRepetitionsFallBackToTheThreshold) {
  const ResultsFile base =
      results_on("H100", {timed_record("a", {1.0e-3, 1.0e-3}), timed_record("b", {1.0e-3, 1.0e-3})});
  const ResultsFile next =
      results_on("H100", {timed_record("a", {1.2e-3, 1.2e-3}), timed_record("b", {1.02e-3, 1.02e-3})});
  const ComparisonReport report = compare_results(base, next, {});
  EXPECT_EQ(row_for(report, "a").method, "threshold");
  EXPECT_EQ(row_for(report, "a").verdict, Verdict::slower);
  EXPECT_EQ(row_for(report, "b").method, "threshold");
  EXPECT_EQ(row_for(report, "b").verdict, Verdict::same);  // 2% is under the 5% threshold
  EXPECT_EQ(report.regressions, 1);
}

TEST(CompareResults, NewDisagreementIsAnAgreementRegression) {
  Record disagreeing = untimed_record("a", RecordStatus::disagree);
  disagreeing.note = "output y: 3 violations";
  const ResultsFile base = results_on("H100", {timed_record("a", low_noise(1e-3))});
  const ResultsFile next = results_on("H100", {disagreeing});

  const ComparisonReport report = compare_results(base, next, {});
  EXPECT_EQ(row_for(report, "a").verdict, Verdict::agreement_regression);
  EXPECT_EQ(row_for(report, "a").detail, "new: disagree (output y: 3 violations)");
  EXPECT_EQ(report.regressions, 1);

  const ComparisonReport fixed = compare_results(next, base, {});
  EXPECT_EQ(row_for(fixed, "a").verdict, Verdict::agreement_fixed);
  EXPECT_EQ(fixed.regressions, 0);
}

TEST(CompareResults, AnErrorIsAnAgreementRegressionButAMissingDeviceIsNot) {
  const Record failing = untimed_record("a", RecordStatus::error);
  const Record skipped = untimed_record("b", RecordStatus::no_cuda_device);
  const ResultsFile base = results_on("H100", {timed_record("a", low_noise(1e-3)), timed_record("b", low_noise(1e-3))});
  const ResultsFile next = results_on("", {failing, skipped});
  const ComparisonReport report = compare_results(base, next, {});
  EXPECT_EQ(row_for(report, "a").verdict, Verdict::agreement_regression);
  EXPECT_EQ(row_for(report, "b").verdict, Verdict::not_timed);
  EXPECT_EQ(report.regressions, 1);

  const ComparisonReport neither = compare_results(next, next, {});
  EXPECT_EQ(row_for(neither, "b").verdict, Verdict::not_timed);
  EXPECT_EQ(row_for(neither, "b").detail, "both: no_cuda_device");
  EXPECT_EQ(neither.regressions, 0);
}

TEST(CompareResults, RecordsInOnlyOneFileAreReportedNotRegressions) {
  const ResultsFile base =
      results_on("H100", {timed_record("a", low_noise(1e-3)), timed_record("gone", low_noise(1e-3))});
  const ResultsFile next =
      results_on("H100", {timed_record("a", low_noise(1e-3)), timed_record("added", low_noise(1e-3))});
  const ComparisonReport report = compare_results(base, next, {});
  ASSERT_EQ(report.rows.size(), 3u);
  EXPECT_EQ(row_for(report, "gone").verdict, Verdict::only_in_base);
  EXPECT_EQ(row_for(report, "added").verdict, Verdict::only_in_new);
  EXPECT_EQ(report.regressions, 0);
}

TEST(CompareResults, DuplicateKeysAndBadOptionsAreUsageErrors) {
  const ResultsFile twice = results_on("H100", {timed_record("a", {1e-3}), timed_record("a", {1e-3})});
  const ResultsFile once = results_on("H100", {timed_record("a", {1e-3})});
  EXPECT_THROW(compare_results(twice, once, {}), UsageError);
  EXPECT_THROW(compare_results(once, once, {.threshold = -0.1}), UsageError);
  EXPECT_THROW(compare_results(once, once, {.alpha = 0}), UsageError);
  EXPECT_THROW(compare_results(once, once, {.min_repetitions = 1}), UsageError);
}

TEST(CompareResults, TableAcrossDevices) {
  const Record disagreeing = untimed_record("broken", RecordStatus::disagree);
  const ResultsFile base =
      results_on("NVIDIA H100 80GB HBM3", {timed_record("a", low_noise(1e-3)), timed_record("fast", low_noise(2.5e-6)),
                                           timed_record("broken", {3e-9, 3e-9}), timed_record("gone", {1.5})});
  const ResultsFile next =
      results_on("NVIDIA H200", {timed_record("a", scaled(low_noise(1e-3), 1.2)),
                                 timed_record("fast", scaled(low_noise(2.5e-6), 0.5)), disagreeing});
  const ComparisonReport report = compare_results(base, next, {});
  EXPECT_EQ(report.base_device, "NVIDIA H100 80GB HBM3");
  EXPECT_EQ(report.new_device, "NVIDIA H200");

  std::ostringstream out;
  print_comparison(report, out);
  const std::string text = out.str();
  std::vector<std::string> lines;
  std::istringstream stream(text);
  for (std::string line; std::getline(stream, line);) lines.push_back(line);

  ASSERT_EQ(lines.size(), 8u) << text;  // devices, header, 4 rows, summary, only-in line
  EXPECT_EQ(lines[0],
            "devices differ: base NVIDIA H100 80GB HBM3, new NVIDIA H200 (ratios include the hardware difference)");
  EXPECT_EQ(lines[1].rfind("key", 0), 0u) << lines[1];
  EXPECT_NE(lines[2].find("1.00 ms"), std::string::npos) << lines[2];
  EXPECT_NE(lines[2].find("1.20 ms"), std::string::npos) << lines[2];
  EXPECT_NE(lines[2].find("slower"), std::string::npos) << lines[2];
  EXPECT_NE(lines[3].find("2.50 us"), std::string::npos) << lines[3];
  EXPECT_NE(lines[3].find("faster"), std::string::npos) << lines[3];
  EXPECT_NE(lines[4].find("3.00 ns"), std::string::npos) << lines[4];
  EXPECT_NE(lines[4].find("agreement_regression"), std::string::npos) << lines[4];
  EXPECT_NE(lines[5].find("1.50 s"), std::string::npos) << lines[5];
  EXPECT_EQ(lines[6], "3 compared, 1 slower, 1 faster, 1 agreement regressions");
  EXPECT_EQ(lines[7], "1 only in base, 0 only in new (not regressions)");

  // Aligned: the verdict column starts at the same position in the header and every row.
  const size_t verdict_column = lines[1].find("verdict");
  EXPECT_EQ(lines[2].find("slower"), verdict_column);
  EXPECT_EQ(lines[3].find("faster"), verdict_column);
  EXPECT_EQ(lines[5].find("only_in_base"), verdict_column);
}

TEST(CompareResults, SameDeviceHeader) {
  const ResultsFile file = results_on("", {timed_record("a", {1e-3})});
  std::ostringstream out;
  print_comparison(compare_results(file, file, {}), out);
  EXPECT_EQ(out.str().substr(0, out.str().find('\n')), "device: cpu");
}

}  // namespace
}  // namespace gauge
