// The reference conversions round with std::nearbyint, which follows the current floating-point
// rounding mode; their contract is ties-to-even, so they select FE_TONEAREST for the duration of a
// conversion and put back whatever the caller had.
#pragma once

#include <cfenv>
#include <stdexcept>
#include <string>

namespace gauge::reference::precision {

class RoundToNearestScope {
 public:
  explicit RoundToNearestScope(const char* who) : saved_(std::fegetround()) {
    if (saved_ != FE_TONEAREST && std::fesetround(FE_TONEAREST) != 0) {
      throw std::runtime_error(std::string(who) + ": cannot select FE_TONEAREST rounding");
    }
  }
  ~RoundToNearestScope() {
    if (saved_ != FE_TONEAREST) std::fesetround(saved_);
  }
  RoundToNearestScope(const RoundToNearestScope&) = delete;
  RoundToNearestScope& operator=(const RoundToNearestScope&) = delete;

 private:
  int saved_;
};

}  // namespace gauge::reference::precision
