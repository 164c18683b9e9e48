#include "harness/memory.h"

#include <sys/resource.h>

#include <cstdlib>

namespace gauge::mem {

HostCounters& host_counters() {
  static HostCounters counters;
  return counters;
}

void* counted_allocate(size_t bytes) {
  // 64-byte alignment: AVX-512-friendly for the reference's loops, and what the GPU upload expects.
  const size_t rounded = (bytes + 63) / 64 * 64;
  void* p = std::aligned_alloc(64, rounded == 0 ? 64 : rounded);
  if (p == nullptr) throw std::bad_alloc();
  HostCounters& c = host_counters();
  const int64_t now = c.current.fetch_add(static_cast<int64_t>(bytes)) + static_cast<int64_t>(bytes);
  c.allocations.fetch_add(1);
  int64_t seen = c.peak.load();
  while (now > seen && !c.peak.compare_exchange_weak(seen, now)) {
  }
  return p;
}

void counted_free(void* p, size_t bytes) noexcept {
  if (p == nullptr) return;
  std::free(p);
  host_counters().current.fetch_sub(static_cast<int64_t>(bytes));
}

void reset_host_peak() { host_counters().peak.store(host_counters().current.load()); }
void raise_host_peak(int64_t bytes) {
  HostCounters& c = host_counters();
  int64_t seen = c.peak.load();
  while (bytes > seen && !c.peak.compare_exchange_weak(seen, bytes)) {
  }
}
int64_t host_current_bytes() { return host_counters().current.load(); }
int64_t host_peak_bytes() { return host_counters().peak.load(); }

int64_t process_max_rss_bytes() {
  rusage usage{};
  if (getrusage(RUSAGE_SELF, &usage) != 0) return -1;
  return static_cast<int64_t>(usage.ru_maxrss) * 1024;  // Linux reports kilobytes
}

}  // namespace gauge::mem
