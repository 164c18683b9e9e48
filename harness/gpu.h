// The harness's view of one CUDA device. Implemented in harness/cuda/ when gauge is built with CUDA,
// and by harness/gpu_unavailable.cc otherwise (every entry point then reports why there is no GPU).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "harness/case.h"
#include "harness/stream.h"
#include "harness/tensor.h"

// cublasHandle_t is `cublasContext*` and cublasLtHandle_t `cublasLtContext*`: named here so that
// host-only code can pass them without including the CUDA headers.
struct cublasContext;
struct cublasLtContext;

namespace gauge::gpu {

struct DeviceInfo {
  int ordinal = 0;
  std::string name;
  int cc_major = 0;
  int cc_minor = 0;
  int sm_count = 0;
  int64_t memory_bytes = 0;
  int64_t l2_bytes = 0;
  double measured_sm_clock_mhz = 0;  // from a timed clock64() spin, not the nominal boost clock
  std::string driver_version;        // "13.0"
  std::string runtime_version;
  std::string cublas_version;
  std::string nccl_version;  // "not built" without GAUGE_NCCL
};

// Empty when a CUDA device can be used; otherwise one line saying why not: "built without CUDA
// (GAUGE_CUDA=OFF)", "no CUDA device", or the driver's error.
std::string unavailable_reason();
inline bool available() { return unavailable_reason().empty(); }
DeviceInfo device_info();  // throws RuntimeFailure when unavailable

struct PoolPeaks {
  int64_t used_high_bytes = 0;      // high-water mark of bytes handed out by the harness pool
  int64_t reserved_high_bytes = 0;  // high-water mark of bytes the pool held from the driver
  int64_t untracked_bytes = 0;      // growth of cudaMemGetInfo's used bytes not explained by the pool
};

// One stream, one stream-ordered memory pool (cudaMemPool_t) and the events used for timing. Every
// device buffer of a case (inputs, outputs, library workspaces) comes from the pool, so its
// high-water mark is the case's measured device peak.
class Session {
 public:
  virtual ~Session() = default;
  static std::unique_ptr<Session> open();  // throws RuntimeFailure when unavailable

  virtual StreamHandle stream() = 0;
  virtual const DeviceInfo& info() const = 0;

  // Frees what the previous case left, and resets the pool's high-water marks and the
  // cudaMemGetInfo baseline.
  virtual void begin_case() = 0;
  virtual PoolPeaks peaks() = 0;

  virtual DeviceTensor upload(const HostTensor& host) = 0;
  // Filled with 0xFF bytes (NaN in every float format) so unwritten outputs cannot pass.
  virtual DeviceTensor allocate_poisoned(const std::string& name, DType dtype, const Shape& shape) = 0;
  virtual HostTensor download(const DeviceTensor& device) = 0;
  // Stream-ordered scratch from the pool, valid until the next begin_case().
  virtual void* workspace(size_t bytes) = 0;
  // Returns a workspace() allocation to the pool early (stream-ordered), so that a case can show a
  // lower high-water mark by freeing what it no longer needs (e.g. a gradient consumed by the
  // optimizer). Throws RuntimeFailure for a pointer the pool did not hand out in this case.
  virtual void release(void* workspace_pointer) = 0;

  // cuBLAS and cuBLASLt handles bound to stream(). The cuBLAS handle's workspace is a pool
  // allocation made at the first blas() call of each case, and cuBLASLt matmuls take theirs from
  // workspace(), so library workspaces count toward the measured peak. Both handles are created when
  // the session opens, before any case's baseline, so their own allocations are never "untracked".
  virtual cublasContext* blas() = 0;
  virtual cublasLtContext* blas_lt() = 0;
  static constexpr size_t kBlasWorkspaceBytes = size_t{32} << 20;  // cuBLAS's recommendation for Hopper

  // Waits for the stream; throws RuntimeFailure with the CUDA error if any launch failed.
  virtual void synchronize() = 0;

  // Mean seconds per call of `launch`, measured with CUDA events around `batch` back-to-back calls.
  // With flush_l2, a write over twice the L2 size precedes every call outside the timed region, and
  // each call is timed on its own.
  virtual double time_launches(const std::function<void(StreamHandle)>& launch, int batch, bool flush_l2) = 0;
};

}  // namespace gauge::gpu
