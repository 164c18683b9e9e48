#include "harness/case.h"

#include <algorithm>
#include <regex>
#include <set>
#include <sstream>

#include "harness/error.h"

namespace gauge {

namespace {
std::vector<CaseDecl>& registry() {
  static std::vector<CaseDecl> cases;
  return cases;
}
}  // namespace

int64_t Point::dim(std::string_view name) const {
  for (const auto& [key, value] : dims) {
    if (key == name) return value;
  }
  throw UsageError("point '" + shape + "' has no dimension '" + std::string(name) + "'");
}

std::string Point::label() const { return shape + " " + std::string(dtype_name(dtype)); }

std::vector<Point> grid(const std::vector<ShapeSpec>& shapes, const std::vector<DType>& dtypes) {
  std::vector<Point> points;
  for (const ShapeSpec& spec : shapes) {
    std::ostringstream label;
    for (size_t i = 0; i < spec.dims.size(); ++i) {
      label << (i ? "," : "") << spec.dims[i].first << "=" << spec.dims[i].second;
    }
    for (DType dtype : dtypes) points.push_back(Point{label.str(), spec.dims, dtype, spec.quick});
  }
  return points;
}

bool register_case(CaseDecl decl) {
  const std::string name = decl.full_name();
  auto require = [&](bool ok, const char* what) {
    if (!ok) throw std::logic_error("case '" + name + "' is declared without " + what);
  };
  require(!decl.suite.empty() && !decl.name.empty(), "a suite and a name");
  require(!decl.points.empty(), "points");
  require(static_cast<bool>(decl.model), "a cost model");
  require(static_cast<bool>(decl.tolerance), "a tolerance rule");
  require(static_cast<bool>(decl.inputs), "an input generator");
  require(static_cast<bool>(decl.reference), "a reference implementation");
  if (find_case(name) != nullptr) throw std::logic_error("case '" + name + "' is registered twice");
  registry().push_back(std::move(decl));
  return true;
}

ToleranceRule output_rule(const CaseDecl& decl, const Point& point, const std::string& output) {
  return decl.output_tolerance ? decl.output_tolerance(point, output) : decl.tolerance(point);
}

std::vector<ToleranceRule> output_rules(const CaseDecl& decl, const Point& point, const ReferenceResult& reference) {
  std::vector<ToleranceRule> rules;
  for (size_t i = 0; i < reference.outputs.size(); ++i) {
    const HostTensor& out = reference.outputs[i];
    rules.push_back(output_rule(decl, point, out.name()));
    if (rules.back().kind != ToleranceRule::Kind::faithful) continue;
    if (reference.faithful.size() <= i || reference.faithful[i].shape() != out.shape()) {
      throw std::logic_error("case '" + decl.full_name() + "' judges output '" + out.name() +
                             "' by the faithful rule but its reference gives no faithful output of that shape");
    }
  }
  return rules;
}

const std::vector<CaseDecl>& all_cases() { return registry(); }

std::vector<std::string> suite_names() {
  std::set<std::string> names;
  for (const CaseDecl& c : registry()) names.insert(c.suite);
  return {names.begin(), names.end()};
}

const CaseDecl* find_case(std::string_view full_name) {
  for (const CaseDecl& c : registry()) {
    if (c.full_name() == full_name) return &c;
  }
  return nullptr;
}

std::string record_name(const CaseDecl& decl, const Point& point) {
  return decl.full_name() + "/" + point.shape + "/" + std::string(dtype_name(point.dtype));
}

std::vector<Selection> select_cases(const std::string& suite, const std::string& filter, bool quick_only) {
  if (!suite.empty()) {
    const std::vector<std::string> known = suite_names();
    if (std::find(known.begin(), known.end(), suite) == known.end()) {
      std::string list;
      for (const std::string& s : known) list += (list.empty() ? "" : ", ") + s;
      throw UsageError("unknown suite '" + suite + "' (known: " + list + ")");
    }
  }
  std::regex pattern;
  try {
    pattern = std::regex(filter.empty() ? std::string(".*") : filter, std::regex::ECMAScript);
  } catch (const std::regex_error& e) {
    throw UsageError("bad --filter regex '" + filter + "': " + e.what());
  }
  std::vector<Selection> selected;
  for (const CaseDecl& c : registry()) {
    if (!suite.empty() && c.suite != suite) continue;
    Selection s{&c, {}};
    for (const Point& p : c.points) {
      if (quick_only && !p.quick) continue;
      if (std::regex_search(record_name(c, p), pattern)) s.points.push_back(&p);
    }
    if (!s.points.empty()) selected.push_back(std::move(s));
  }
  if (selected.empty()) {
    throw UsageError("no case matches" + (suite.empty() ? std::string() : " in suite '" + suite + "'") +
                     (filter.empty() ? std::string() : " with filter '" + filter + "'"));
  }
  return selected;
}

}  // namespace gauge
