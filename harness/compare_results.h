// `gauge compare BASE NEW`: matches records by key, flags agreement regressions and slowdowns beyond
// noise, prints a table, and returns the process exit code (0 clean, 1 regression).
#pragma once

#include <iosfwd>
#include <string>
#include <vector>

#include "harness/results.h"

namespace gauge {

struct MannWhitneyResult {
  double u = 0;        // U statistic of `b` over `a`: counts pairs with b > a (ties count 1/2)
  double z = 0;        // normal approximation with tie and continuity corrections
  double p_greater = 1;  // one-sided p-value for "b tends to be larger than a"
};
// Values must be finite. An empty side gives u = 0, z = 0, p_greater = 1.
MannWhitneyResult mann_whitney_u(const std::vector<double>& a, const std::vector<double>& b);

struct CompareOptions2 {
  double threshold = 0.05;  // relative slowdown of the median that counts
  double alpha = 0.05;      // significance for the U test
  int min_repetitions = 5;  // below this on either side, the threshold alone decides
};

enum class Verdict { same, faster, slower, agreement_regression, agreement_fixed, only_in_base, only_in_new, not_timed };

struct ComparedRow {
  std::string key;
  Verdict verdict = Verdict::same;
  double base_median = 0, new_median = 0;  // seconds; 0 where that side has no timing
  double ratio = 0;                         // new / base median; 0 where the times were not compared
  double p_value = 1;  // one-sided U-test p in the direction of the change; 1 unless method is mann-whitney
  std::string method;  // "mann-whitney" or "threshold"; empty where the times were not compared
  std::string detail;  // one line: why not timed, the failing status, or what limits the comparison
};

struct ComparisonReport {
  std::vector<ComparedRow> rows;
  int regressions = 0;
  std::string base_device, new_device;
};

// Throws UsageError for options out of range (threshold < 0, alpha outside (0, 1), min_repetitions < 2)
// and for a file that holds one key twice.
ComparisonReport compare_results(const ResultsFile& base, const ResultsFile& next, const CompareOptions2& options);
void print_comparison(const ComparisonReport& report, std::ostream& out);
std::string_view verdict_name(Verdict v);

}  // namespace gauge
