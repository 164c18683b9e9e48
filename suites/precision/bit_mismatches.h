// Test helpers for bit-exact conversion checks: hex formatting and a mismatch collector that reports
// the count and the first few inputs with their expected and actual bits.
#pragma once

#include <bit>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <string>
#include <utility>

#include <gtest/gtest.h>

namespace gauge::test_support {

inline uint32_t bits_of(float x) { return std::bit_cast<uint32_t>(x); }
inline float float_of(uint32_t bits) { return std::bit_cast<float>(bits); }

inline std::string hex(uint32_t value, int digits) {
  char text[16];
  std::snprintf(text, sizeof text, "0x%0*" PRIX32, digits, value);
  return text;
}

// "0x477FF000 (65520)"
inline std::string describe_f32(uint32_t bits) {
  char value[40];
  std::snprintf(value, sizeof value, " (%.9g)", static_cast<double>(float_of(bits)));
  return hex(bits, 8) + value;
}

class Mismatches {
 public:
  explicit Mismatches(std::string what) : what_(std::move(what)) {}

  void add(const std::string& input, uint32_t expected, uint32_t actual, int digits) {
    if (count_++ < kShown) {
      lines_ += "\n  in=" + input + " expected=" + hex(expected, digits) + " actual=" + hex(actual, digits);
    }
  }
  int64_t count() const { return count_; }
  std::string text() const {
    return what_ + ": " + std::to_string(count_) + " mismatches" + (count_ > kShown ? " (first shown)" : "") + lines_;
  }

 private:
  static constexpr int64_t kShown = 20;
  std::string what_;
  std::string lines_;
  int64_t count_ = 0;
};

}  // namespace gauge::test_support

#define EXPECT_NO_MISMATCHES(m) EXPECT_EQ((m).count(), 0) << (m).text()
