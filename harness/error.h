#pragma once

#include <stdexcept>
#include <string>

namespace gauge {

// Bad input from a user or a file: the CLI prints what() as one line and exits 2.
class UsageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Something failed while running (a CUDA call, an allocation): a bug or an environment problem.
class RuntimeFailure : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The device present cannot run this case at all (e.g. fp8 tensor cores before compute capability
// 8.9): the record says so with status unsupported_device, and the conformance test skips.
class DeviceUnsupported : public RuntimeFailure {
 public:
  using RuntimeFailure::RuntimeFailure;
};

}  // namespace gauge
