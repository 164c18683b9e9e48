// Host memory accounting: every harness and reference buffer is allocated through CountingAllocator,
// so the peak bytes of one case are measured, not computed. Counters are process-wide and atomic.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <new>
#include <vector>

namespace gauge::mem {

struct HostCounters {
  std::atomic<int64_t> current{0};
  std::atomic<int64_t> peak{0};
  std::atomic<int64_t> allocations{0};
};

HostCounters& host_counters();
void* counted_allocate(size_t bytes);
void counted_free(void* p, size_t bytes) noexcept;

// Starts a new measurement window: peak := current.
void reset_host_peak();
int64_t host_current_bytes();
int64_t host_peak_bytes();
// Resident-set high-water mark of the whole process (getrusage), as context beside the counted peak.
int64_t process_max_rss_bytes();

template <class T>
struct CountingAllocator {
  using value_type = T;
  CountingAllocator() noexcept = default;
  template <class U>
  CountingAllocator(const CountingAllocator<U>&) noexcept {}
  T* allocate(size_t n) { return static_cast<T*>(counted_allocate(n * sizeof(T))); }
  void deallocate(T* p, size_t n) noexcept { counted_free(p, n * sizeof(T)); }
  template <class U>
  bool operator==(const CountingAllocator<U>&) const noexcept {
    return true;
  }
};

// The vector type reference code uses for every buffer it owns.
template <class T>
using HostVector = std::vector<T, CountingAllocator<T>>;

// Raises the recorded peak to at least `bytes` (a closing nested measurement gives back the enclosing
// one's peak).
void raise_host_peak(int64_t bytes);

// Measures the counted peak over a scope, relative to the bytes live when it started. Scopes nest: the
// peak is restarted for this scope, and when it ends the enclosing window's peak is the larger of
// what it had seen before and what this scope saw (a reference that measures its own phases must not
// hide its earlier peak from the harness's window around it). Not copyable.
class PeakScope {
 public:
  PeakScope() : baseline_(host_current_bytes()), enclosing_peak_(host_peak_bytes()) { reset_host_peak(); }
  ~PeakScope() { raise_host_peak(enclosing_peak_); }
  PeakScope(const PeakScope&) = delete;
  PeakScope& operator=(const PeakScope&) = delete;
  int64_t peak_bytes() const { return host_peak_bytes(); }
  int64_t peak_above_baseline() const { return host_peak_bytes() - baseline_; }

 private:
  int64_t baseline_;
  int64_t enclosing_peak_;
};

}  // namespace gauge::mem
