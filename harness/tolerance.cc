#include "harness/tolerance.h"

#include <cmath>
#include <sstream>

#include "harness/error.h"

namespace gauge {

std::string ToleranceRule::describe() const {
  std::ostringstream out;
  switch (kind) {
    case Kind::ulp:
      if (max_ulps == 0) {
        out << "bit-exact";
      } else {
        out << "<= " << max_ulps << " ulp";
      }
      break;
    case Kind::abs_rel: out << "|d| <= " << atol << " + " << rtol << " * |expected|"; break;
    case Kind::faithful:
      out << "|d| <= " << factor << " x max faithful error + " << atol;
      break;
  }
  if (!derivation.empty()) out << " (" << derivation << ")";
  return out.str();
}

namespace tolerance {

double gamma(int64_t n, double u) {
  const double nu = static_cast<double>(n) * u;
  if (nu >= 1.0) throw UsageError("accumulation depth " + std::to_string(n) + " too large for a gamma_n bound");
  return nu / (1.0 - nu);
}

ToleranceRule exact_bits() {
  ToleranceRule rule;
  rule.kind = ToleranceRule::Kind::ulp;
  rule.max_ulps = 0;
  rule.derivation = "a single correctly rounded operation: one answer";
  return rule;
}

ToleranceRule ulps(int64_t max_ulps, std::string why) {
  ToleranceRule rule;
  rule.kind = ToleranceRule::Kind::ulp;
  rule.max_ulps = max_ulps;
  rule.derivation = std::move(why);
  return rule;
}

ToleranceRule accumulation(DType output, DType accumulate, int64_t depth, double magnitude) {
  ToleranceRule rule;
  rule.kind = ToleranceRule::Kind::abs_rel;
  rule.rtol = unit_roundoff(output) + gamma(depth, unit_roundoff(accumulate));
  rule.atol = rule.rtol * magnitude;
  std::ostringstream why;
  why << "u(" << dtype_name(output) << ") + gamma_" << depth << "(u(" << dtype_name(accumulate)
      << ")), atol at magnitude " << magnitude;
  rule.derivation = why.str();
  return rule;
}

ToleranceRule faithful(double factor, double atol, std::string why) {
  ToleranceRule rule;
  rule.kind = ToleranceRule::Kind::faithful;
  rule.factor = factor;
  rule.atol = atol;
  rule.derivation = std::move(why);
  return rule;
}

}  // namespace tolerance
}  // namespace gauge
