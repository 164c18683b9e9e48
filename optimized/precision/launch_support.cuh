// Host-side launch support shared by the precision kernels (casts, fp8 / tf32, stochastic rounding,
// scaling, unscale): error reporting, the cached SM count, and the checks every entry point makes on
// its buffers.
#pragma once

#include <cuda_runtime.h>

#include <atomic>
#include <cstdint>
#include <string>

#include "harness/error.h"
#include "optimized/precision/fp8_launch.h"

namespace gauge::optimized::precision::launch_support {

[[noreturn]] inline void fail(const char* what, const std::string& detail) {
  throw RuntimeFailure(std::string(what) + ": " + detail);
}

[[noreturn]] inline void refuse(const char* what, const std::string& detail) {
  throw UsageError(std::string(what) + ": " + detail);
}

inline void check(cudaError_t status, const char* what) {
  if (status != cudaSuccess) fail(what, cudaGetErrorString(status));
}

// The SM count of the current device, read once per device (the attribute query is not free when
// launches are timed back to back).
inline int sm_count_of_current_device(const char* what) {
  constexpr int kMaxDevices = 64;
  static std::atomic<int> cached[kMaxDevices];
  int device = 0;
  check(cudaGetDevice(&device), what);
  if (device >= 0 && device < kMaxDevices) {
    const int known = cached[device].load(std::memory_order_relaxed);
    if (known > 0) return known;
  }
  int sm_count = 0;
  check(cudaDeviceGetAttribute(&sm_count, cudaDevAttrMultiProcessorCount, device), what);
  if (device >= 0 && device < kMaxDevices) cached[device].store(sm_count, std::memory_order_relaxed);
  return sm_count;
}

// n >= 0, both pointers aligned to their element, buffers not overlapping (the kernels read through
// the non-coherent path): UsageError otherwise. Returns the split of [0, n).
inline fp8_launch::Split checked_split(const char* what, const void* in, int in_bytes, const void* out, int out_bytes,
                                       int64_t n, int64_t elements_per_vector, int64_t index_multiple = 1) {
  if (n < 0) refuse(what, "negative element count " + std::to_string(n));
  const auto in_address = reinterpret_cast<uintptr_t>(in);
  const auto out_address = reinterpret_cast<uintptr_t>(out);
  if (n > 0 && (in == nullptr || out == nullptr)) refuse(what, "null buffer");
  if (!fp8_launch::naturally_aligned(in_address, in_bytes) || !fp8_launch::naturally_aligned(out_address, out_bytes)) {
    refuse(what, "pointer not aligned to its element size");
  }
  const uintptr_t in_end = in_address + static_cast<uintptr_t>(n) * static_cast<uintptr_t>(in_bytes);
  const uintptr_t out_end = out_address + static_cast<uintptr_t>(n) * static_cast<uintptr_t>(out_bytes);
  if (n > 0 && in_address < out_end && out_address < in_end) refuse(what, "input and output overlap");
  return fp8_launch::split(n, in_address, in_bytes, out_address, out_bytes, elements_per_vector, index_multiple);
}

}  // namespace gauge::optimized::precision::launch_support
