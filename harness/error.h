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

}  // namespace gauge
