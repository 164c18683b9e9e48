#include "harness/compare_results.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <ostream>
#include <utility>

#include "harness/error.h"

namespace gauge {

// Mann-Whitney U, normal approximation.
//
// Pool a (n1 values) and b (n2 values), sort, and give each value its rank 1..N (N = n1 + n2); a run
// of t equal values all get the mean of the ranks they span (midranks). With R_b the rank sum of b,
//
//   U     = R_b - n2 (n2 + 1) / 2                 pairs (a_i, b_j) with b_j > a_i, ties counting 1/2
//   mu    = n1 n2 / 2                             E[U] when a and b come from one distribution
//   sigma = sqrt(n1 n2 / 12 * ((N + 1) - sum(t^3 - t) / (N (N - 1))))   tie-corrected
//   z     = (U - mu - 1/2) / sigma                continuity correction towards the null, one-sided
//   p     = P(Z >= z) = erfc(z / sqrt 2) / 2      small p: b tends to be larger than a
//
// When every value is tied sigma is 0 and nothing favours b: z = 0, p = 1.
MannWhitneyResult mann_whitney_u(const std::vector<double>& a, const std::vector<double>& b) {
  MannWhitneyResult result;
  if (a.empty() || b.empty()) return result;
  const double n1 = static_cast<double>(a.size());
  const double n2 = static_cast<double>(b.size());

  std::vector<std::pair<double, bool>> pooled;  // (value, comes from b)
  pooled.reserve(a.size() + b.size());
  for (double v : a) pooled.emplace_back(v, false);
  for (double v : b) pooled.emplace_back(v, true);
  std::sort(pooled.begin(), pooled.end(), [](const auto& x, const auto& y) { return x.first < y.first; });

  double rank_sum_b = 0;
  double tie_term = 0;
  for (size_t first = 0; first < pooled.size();) {
    size_t last = first;
    while (last + 1 < pooled.size() && pooled[last + 1].first == pooled[first].first) ++last;
    const double midrank = (static_cast<double>(first + 1) + static_cast<double>(last + 1)) / 2;
    const double tied = static_cast<double>(last - first + 1);
    tie_term += tied * tied * tied - tied;
    for (size_t i = first; i <= last; ++i) {
      if (pooled[i].second) rank_sum_b += midrank;
    }
    first = last + 1;
  }

  const double n = n1 + n2;
  result.u = rank_sum_b - n2 * (n2 + 1) / 2;
  const double mean = n1 * n2 / 2;
  const double variance = n1 * n2 / 12 * ((n + 1) - tie_term / (n * (n - 1)));
  if (variance <= 0) return result;
  result.z = (result.u - mean - 0.5) / std::sqrt(variance);
  result.p_greater = 0.5 * std::erfc(result.z / std::sqrt(2.0));
  return result;
}

std::string_view verdict_name(Verdict v) {
  switch (v) {
    case Verdict::same: return "same";
    case Verdict::faster: return "faster";
    case Verdict::slower: return "slower";
    case Verdict::agreement_regression: return "agreement_regression";
    case Verdict::agreement_fixed: return "agreement_fixed";
    case Verdict::only_in_base: return "only_in_base";
    case Verdict::only_in_new: return "only_in_new";
    case Verdict::not_timed: return "not_timed";
  }
  return "?";
}

namespace {

// A record that ran and got the wrong answer (or threw). A record whose status says ok while one of
// its agreements failed counts too: its status cannot be trusted.
bool failed(const Record& r) {
  return r.status == RecordStatus::disagree || r.status == RecordStatus::error ||
         (r.status == RecordStatus::ok && !r.agrees());
}

std::string first_line(const std::string& text) { return text.substr(0, text.find('\n')); }

std::string status_with_note(const Record& r) {
  std::string text(status_name(r.status));
  if (!r.note.empty()) text += " (" + first_line(r.note) + ")";
  return text;
}

bool all_finite(const std::vector<double>& values) {
  return std::all_of(values.begin(), values.end(), [](double v) { return std::isfinite(v); });
}

std::string device_of(const nlohmann::ordered_json& machine) {
  if (machine.is_object()) {
    auto gpu = machine.find("gpu");
    if (gpu != machine.end() && gpu->is_object()) {
      auto name = gpu->find("name");
      if (name != gpu->end() && name->is_string()) return name->get<std::string>();
    }
  }
  return "cpu";
}

std::map<std::string, const Record*> index_by_key(const ResultsFile& file, std::string_view which) {
  std::map<std::string, const Record*> index;
  for (const Record& r : file.records) {
    if (!index.emplace(r.key(), &r).second) {
      throw UsageError(std::string(which) + " results hold record '" + r.key() + "' more than once");
    }
  }
  return index;
}

void compare_timings(const Record& base, const Record& next, const CompareOptions2& options, ComparedRow& row) {
  const TimingStats& base_timing = *base.timing;
  const TimingStats& new_timing = *next.timing;
  if (!(base_timing.median_seconds > 0) || !std::isfinite(new_timing.median_seconds)) {
    row.verdict = Verdict::not_timed;
    row.detail = "median time not usable";
    return;
  }
  row.ratio = row.new_median / row.base_median;
  // "Faster" mirrors "slower": the base is more than 1 + threshold times the new time.
  const bool over_threshold = row.ratio > 1 + options.threshold;
  const bool under_threshold = row.ratio < 1 / (1 + options.threshold);

  const std::vector<double>& base_times = base_timing.repetition_seconds;
  const std::vector<double>& new_times = new_timing.repetition_seconds;
  const auto min_repetitions = static_cast<size_t>(std::max(options.min_repetitions, 0));
  const bool testable = base_times.size() >= min_repetitions && new_times.size() >= min_repetitions &&
                        all_finite(base_times) && all_finite(new_times);
  if (testable) {
    row.method = "mann-whitney";
    row.p_value = row.ratio >= 1 ? mann_whitney_u(base_times, new_times).p_greater
                                 : mann_whitney_u(new_times, base_times).p_greater;
    const bool significant = row.p_value < options.alpha;
    row.verdict = over_threshold && significant    ? Verdict::slower
                  : under_threshold && significant ? Verdict::faster
                                                   : Verdict::same;
    if ((over_threshold || under_threshold) && !significant) row.detail = "beyond threshold but within noise";
  } else {
    row.method = "threshold";
    row.verdict = over_threshold ? Verdict::slower : under_threshold ? Verdict::faster : Verdict::same;
    row.detail = std::to_string(base_times.size()) + " vs " + std::to_string(new_times.size()) +
                 " repetitions: too few for a noise test";
  }

  // Not reasons to refuse the comparison, but they change what the ratio means.
  const auto append = [&](const std::string& text) { row.detail += (row.detail.empty() ? "" : "; ") + text; };
  if (base_timing.clock != new_timing.clock)
    append("clocks differ (" + base_timing.clock + " vs " + new_timing.clock + ")");
  if (base_timing.cold_cache != new_timing.cold_cache) append("cold-cache setting differs");
}

ComparedRow compare_records(const Record& base, const Record& next, const CompareOptions2& options) {
  ComparedRow row;
  row.key = base.key();
  if (base.timing) row.base_median = base.timing->median_seconds;
  if (next.timing) row.new_median = next.timing->median_seconds;

  if (base.agrees() && failed(next)) {
    row.verdict = Verdict::agreement_regression;
    row.detail = "new: " + status_with_note(next);
  } else if (failed(base) && next.agrees()) {
    row.verdict = Verdict::agreement_fixed;
    row.detail = "base: " + status_with_note(base);
  } else if (!base.agrees() || !next.agrees()) {
    row.verdict = Verdict::not_timed;
    row.detail = status_with_note(base) == status_with_note(next)
                     ? "both: " + status_with_note(base)
                     : "base: " + status_with_note(base) + ", new: " + status_with_note(next);
  } else if (!base.timing || !next.timing) {
    row.verdict = Verdict::not_timed;
    row.detail = !base.timing && !next.timing ? "no timing on either side"
                 : !base.timing               ? "no timing in base"
                                              : "no timing in new";
  } else {
    compare_timings(base, next, options, row);
  }
  return row;
}

// 3 significant digits in the largest unit that keeps the number at least 1 once rounded (so
// 999.7 us reads "1.00 ms", not "1000 us").
std::string human_seconds(double seconds) {
  if (!(seconds > 0) || !std::isfinite(seconds)) return "-";
  static constexpr std::pair<double, const char*> kUnits[] = {{1, "s"}, {1e-3, "ms"}, {1e-6, "us"}, {1e-9, "ns"}};
  for (const auto& [scale, unit] : kUnits) {
    const double value = seconds / scale;
    if (value >= 0.9995 || scale == 1e-9) {
      char text[32];
      std::snprintf(text, sizeof text, value >= 100 ? "%.0f %s" : value >= 10 ? "%.1f %s" : "%.2f %s", value, unit);
      return text;
    }
  }
  return "-";
}

std::string format_number(const char* format, double value) {
  char text[32];
  std::snprintf(text, sizeof text, format, value);
  return text;
}

bool in_both(const ComparedRow& row) {
  return row.verdict != Verdict::only_in_base && row.verdict != Verdict::only_in_new;
}

}  // namespace

ComparisonReport compare_results(const ResultsFile& base, const ResultsFile& next, const CompareOptions2& options) {
  if (!(options.threshold >= 0)) throw UsageError("compare: the slowdown threshold must be >= 0");
  if (!(options.alpha > 0 && options.alpha < 1)) throw UsageError("compare: alpha must be between 0 and 1");
  if (options.min_repetitions < 2) throw UsageError("compare: the minimum repetitions for the U test must be >= 2");

  ComparisonReport report;
  report.base_device = device_of(base.machine);
  report.new_device = device_of(next.machine);

  const std::map<std::string, const Record*> base_index = index_by_key(base, "base");
  const std::map<std::string, const Record*> new_index = index_by_key(next, "new");

  for (const Record& record : base.records) {
    auto match = new_index.find(record.key());
    if (match == new_index.end()) {
      ComparedRow row;
      row.key = record.key();
      row.verdict = Verdict::only_in_base;
      if (record.timing) row.base_median = record.timing->median_seconds;
      report.rows.push_back(std::move(row));
      continue;
    }
    ComparedRow row = compare_records(record, *match->second, options);
    if (row.verdict == Verdict::agreement_regression || row.verdict == Verdict::slower) ++report.regressions;
    report.rows.push_back(std::move(row));
  }
  for (const Record& record : next.records) {
    if (base_index.contains(record.key())) continue;
    ComparedRow row;
    row.key = record.key();
    row.verdict = Verdict::only_in_new;
    if (record.timing) row.new_median = record.timing->median_seconds;
    report.rows.push_back(std::move(row));
  }
  return report;
}

void print_comparison(const ComparisonReport& report, std::ostream& out) {
  if (report.base_device == report.new_device) {
    out << "device: " << report.base_device << "\n";
  } else {
    out << "devices differ: base " << report.base_device << ", new " << report.new_device
        << " (ratios include the hardware difference)\n";
  }

  std::vector<std::vector<std::string>> table = {
      {"key", "base median", "new median", "ratio", "p", "verdict", "detail"}};
  for (const ComparedRow& row : report.rows) {
    const bool has_ratio = row.ratio > 0;
    table.push_back({row.key, human_seconds(row.base_median), human_seconds(row.new_median),
                     has_ratio ? format_number("%.3f", row.ratio) : "-",
                     row.method == "mann-whitney" ? format_number("%.2g", row.p_value) : "-",
                     std::string(verdict_name(row.verdict)), row.detail});
  }
  std::vector<size_t> widths(table.front().size(), 0);
  for (const auto& cells : table) {
    for (size_t c = 0; c < cells.size(); ++c) widths[c] = std::max(widths[c], cells[c].size());
  }
  // Text columns are left-aligned and numbers right-aligned, so digits line up.
  const auto right_aligned = [](size_t column) { return column >= 1 && column <= 4; };
  for (const auto& cells : table) {
    std::string line;
    for (size_t c = 0; c < cells.size(); ++c) {
      const std::string padding(widths[c] - cells[c].size(), ' ');
      if (c > 0) line += "  ";
      line += right_aligned(c) ? padding + cells[c] : cells[c] + padding;
    }
    out << line.substr(0, line.find_last_not_of(' ') + 1) << "\n";
  }

  const auto count = [&](auto predicate) { return std::count_if(report.rows.begin(), report.rows.end(), predicate); };
  const auto count_verdict = [&](Verdict v) { return count([v](const ComparedRow& row) { return row.verdict == v; }); };
  out << count(in_both) << " compared, " << count_verdict(Verdict::slower) << " slower, "
      << count_verdict(Verdict::faster) << " faster, " << count_verdict(Verdict::agreement_regression)
      << " agreement regressions\n";
  const auto only_base = count_verdict(Verdict::only_in_base);
  const auto only_new = count_verdict(Verdict::only_in_new);
  if (only_base + only_new > 0) out << only_base << " only in base, " << only_new << " only in new (not regressions)\n";
}

}  // namespace gauge
