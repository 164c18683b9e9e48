// harness/gpu.h for builds without CUDA: no device, and every entry point that needs one says why.

#include <memory>
#include <string>

#include "harness/error.h"
#include "harness/gpu.h"

namespace gauge::gpu {

namespace {
constexpr const char* kReason = "built without CUDA (GAUGE_CUDA=OFF)";
}  // namespace

std::string unavailable_reason() { return kReason; }

DeviceInfo device_info() { throw RuntimeFailure(kReason); }

std::unique_ptr<Session> Session::open() { throw RuntimeFailure(kReason); }

}  // namespace gauge::gpu
