// harness/gpu.h for builds with CUDA: device probing, and the Session that owns the stream, the
// stream-ordered memory pool whose high-water marks are a case's device peak, and the timing events.

#include <cublasLt.h>
#include <cublas_v2.h>
#include <dlfcn.h>
#include <cuda_runtime.h>
#if GAUGE_HAS_NCCL
#include <nccl.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "harness/dtype.h"
#include "harness/error.h"
#include "harness/gpu.h"

namespace gauge::gpu {
namespace {

[[noreturn]] void throw_cuda_failure(cudaError_t status, const char* call, const char* file, int line) {
  // A failing runtime call also becomes the thread's "last error"; clear it (a no-op for sticky
  // errors), or the next synchronize() would report this same failure again, e.g. as the next case's.
  (void)cudaGetLastError();
  throw RuntimeFailure(std::string(file) + ":" + std::to_string(line) + ": " + call + " failed: " +
                       cudaGetErrorName(status) + " (" + cudaGetErrorString(status) + ")");
}

#define GAUGE_CUDA_CHECK(call)                                                            \
  do {                                                                                    \
    const cudaError_t gauge_cuda_status = (call);                                         \
    if (gauge_cuda_status != cudaSuccess) {                                               \
      throw_cuda_failure(gauge_cuda_status, #call, __FILE__, __LINE__);                   \
    }                                                                                     \
  } while (false)

[[noreturn]] void throw_cublas_failure(cublasStatus_t status, const char* call, const char* file, int line) {
  throw RuntimeFailure(std::string(file) + ":" + std::to_string(line) + ": " + call + " failed: " +
                       cublasGetStatusName(status) + " (" + cublasGetStatusString(status) + ")");
}

#define GAUGE_CUBLAS_CHECK(call)                                              \
  do {                                                                        \
    const cublasStatus_t gauge_cublas_status = (call);                        \
    if (gauge_cublas_status != CUBLAS_STATUS_SUCCESS) {                       \
      throw_cublas_failure(gauge_cublas_status, #call, __FILE__, __LINE__);   \
    }                                                                         \
  } while (false)

constexpr int kDevice = 0;

// "13.0" from the runtime's 1000 * major + 10 * minor encoding.
std::string cuda_version_string(int encoded) {
  return std::to_string(encoded / 1000) + "." + std::to_string((encoded % 1000) / 10);
}

bool driver_library_present() {
  void* library = dlopen("libcuda.so.1", RTLD_LAZY | RTLD_LOCAL);
  if (library == nullptr) return false;
  dlclose(library);
  return true;
}

std::string probe_unavailable_reason() {
  int count = 0;
  cudaError_t status = cudaGetDeviceCount(&count);
  if (status == cudaErrorNoDevice || (status == cudaSuccess && count == 0)) {
    (void)cudaGetLastError();  // the probe's failure must not surface as a later call's error
    return "no CUDA device";
  }
  if (status != cudaSuccess) {
    (void)cudaGetLastError();
    // Without any NVIDIA driver the runtime reports "driver version is insufficient"; say what is
    // actually missing.
    if (status == cudaErrorInsufficientDriver && !driver_library_present()) {
      return "CUDA driver unavailable: libcuda.so.1 not found (no NVIDIA driver installed)";
    }
    return std::string("CUDA driver unavailable: ") + cudaGetErrorString(status);
  }
  status = cudaSetDevice(kDevice);
  if (status == cudaSuccess) status = cudaFree(nullptr);  // forces the primary context into existence
  if (status != cudaSuccess) {
    (void)cudaGetLastError();
    return std::string("cannot create a CUDA context on device 0: ") + cudaGetErrorString(status);
  }
  return "";
}

// ---- SM clock: a single thread spins on clock64() for a fixed number of cycles ---------------------

__global__ void spin_kernel(int64_t cycles, int64_t* elapsed_cycles) {
  const int64_t start = clock64();
  int64_t now = start;
  while (now - start < cycles) now = clock64();
  *elapsed_cycles = now - start;
}

// Resources of the clock measurement, released however it ends.
struct ClockProbe {
  cudaStream_t stream = nullptr;
  cudaEvent_t start = nullptr;
  cudaEvent_t stop = nullptr;
  int64_t* elapsed = nullptr;
  ~ClockProbe() {
    if (elapsed != nullptr) (void)cudaFree(elapsed);
    if (start != nullptr) (void)cudaEventDestroy(start);
    if (stop != nullptr) (void)cudaEventDestroy(stop);
    if (stream != nullptr) (void)cudaStreamDestroy(stream);
  }
};

double measure_sm_clock_mhz() {
  // ~25 ms at boost clocks: long enough that the microseconds of launch latency inside the events
  // are noise, short enough to run once per process. The first spin lets the clocks ramp up.
  constexpr int64_t kWarmupCycles = 10'000'000;
  constexpr int64_t kTimedCycles = 50'000'000;
  ClockProbe probe;
  GAUGE_CUDA_CHECK(cudaStreamCreateWithFlags(&probe.stream, cudaStreamNonBlocking));
  GAUGE_CUDA_CHECK(cudaEventCreate(&probe.start));
  GAUGE_CUDA_CHECK(cudaEventCreate(&probe.stop));
  GAUGE_CUDA_CHECK(cudaMalloc(&probe.elapsed, sizeof(int64_t)));
  spin_kernel<<<1, 1, 0, probe.stream>>>(kWarmupCycles, probe.elapsed);
  GAUGE_CUDA_CHECK(cudaGetLastError());
  GAUGE_CUDA_CHECK(cudaEventRecord(probe.start, probe.stream));
  spin_kernel<<<1, 1, 0, probe.stream>>>(kTimedCycles, probe.elapsed);
  GAUGE_CUDA_CHECK(cudaGetLastError());
  GAUGE_CUDA_CHECK(cudaEventRecord(probe.stop, probe.stream));
  GAUGE_CUDA_CHECK(cudaEventSynchronize(probe.stop));
  float milliseconds = 0;
  GAUGE_CUDA_CHECK(cudaEventElapsedTime(&milliseconds, probe.start, probe.stop));
  int64_t cycles = 0;
  GAUGE_CUDA_CHECK(cudaMemcpy(&cycles, probe.elapsed, sizeof(cycles), cudaMemcpyDeviceToHost));
  if (milliseconds <= 0) throw RuntimeFailure("SM clock measurement: the timed spin took no time");
  return static_cast<double>(cycles) / (static_cast<double>(milliseconds) * 1e-3) / 1e6;
}

std::string cublas_version_string() {
  int major = 0;
  int minor = 0;
  int patch = 0;
  if (cublasGetProperty(MAJOR_VERSION, &major) != CUBLAS_STATUS_SUCCESS ||
      cublasGetProperty(MINOR_VERSION, &minor) != CUBLAS_STATUS_SUCCESS ||
      cublasGetProperty(PATCH_LEVEL, &patch) != CUBLAS_STATUS_SUCCESS) {
    return "unknown";
  }
  return std::to_string(major) + "." + std::to_string(minor) + "." + std::to_string(patch);
}

std::string nccl_version_string() {
#if GAUGE_HAS_NCCL
  int code = 0;
  const ncclResult_t result = ncclGetVersion(&code);
  if (result != ncclSuccess) return std::string("unknown (") + ncclGetErrorString(result) + ")";
  // Since NCCL 2.9 the code is 10000 * major + 100 * minor + patch.
  return std::to_string(code / 10000) + "." + std::to_string((code % 10000) / 100) + "." +
         std::to_string(code % 100);
#else
  return "not built";
#endif
}

DeviceInfo probe_device_info() {
  const std::string reason = unavailable_reason();
  if (!reason.empty()) throw RuntimeFailure(reason);
  GAUGE_CUDA_CHECK(cudaSetDevice(kDevice));
  cudaDeviceProp properties{};
  GAUGE_CUDA_CHECK(cudaGetDeviceProperties(&properties, kDevice));
  int driver = 0;
  int runtime = 0;
  GAUGE_CUDA_CHECK(cudaDriverGetVersion(&driver));
  GAUGE_CUDA_CHECK(cudaRuntimeGetVersion(&runtime));

  DeviceInfo info;
  info.ordinal = kDevice;
  info.name = properties.name;
  info.cc_major = properties.major;
  info.cc_minor = properties.minor;
  info.sm_count = properties.multiProcessorCount;
  info.memory_bytes = static_cast<int64_t>(properties.totalGlobalMem);
  info.l2_bytes = properties.l2CacheSize;
  info.measured_sm_clock_mhz = measure_sm_clock_mhz();
  info.driver_version = cuda_version_string(driver);
  info.runtime_version = cuda_version_string(runtime);
  info.cublas_version = cublas_version_string();
  info.nccl_version = nccl_version_string();
  return info;
}

// ---- Session ------------------------------------------------------------------------------------

int64_t device_used_bytes() {
  size_t free_bytes = 0;
  size_t total_bytes = 0;
  GAUGE_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
  return static_cast<int64_t>(total_bytes) - static_cast<int64_t>(free_bytes);
}

class CudaSession final : public Session {
 public:
  CudaSession() = default;
  CudaSession(const CudaSession&) = delete;
  CudaSession& operator=(const CudaSession&) = delete;

  // Separate from the constructor so that a failure halfway leaves an object whose destructor
  // releases what was created.
  void initialize() {
    info_ = device_info();
    GAUGE_CUDA_CHECK(cudaSetDevice(kDevice));
    GAUGE_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));

    cudaMemPoolProps properties{};
    properties.allocType = cudaMemAllocationTypePinned;
    properties.handleTypes = cudaMemHandleTypeNone;
    properties.location.type = cudaMemLocationTypeDevice;
    properties.location.id = kDevice;
    GAUGE_CUDA_CHECK(cudaMemPoolCreate(&pool_, &properties));
    // Freed memory stays reserved until begin_case() trims it, so re-allocations within a case (and
    // within a timed loop) never go back to the driver.
    uint64_t keep_everything = std::numeric_limits<uint64_t>::max();
    GAUGE_CUDA_CHECK(cudaMemPoolSetAttribute(pool_, cudaMemPoolAttrReleaseThreshold, &keep_everything));

    for (int i = 0; i < 2; ++i) {
      GAUGE_CUDA_CHECK(cudaEventCreate(&starts_[i]));
      GAUGE_CUDA_CHECK(cudaEventCreate(&stops_[i]));
    }
    // The L2 flush buffer lives outside the pool, so cold-cache timing does not count toward a case's
    // measured peak; allocated here, before the first baseline, it is not "untracked" either.
    flush_bytes_ = 2 * static_cast<size_t>(std::max<int64_t>(info_.l2_bytes, 0));
    if (flush_bytes_ > 0) GAUGE_CUDA_CHECK(cudaMalloc(&flush_buffer_, flush_bytes_));
    GAUGE_CUBLAS_CHECK(cublasCreate(&blas_));
    GAUGE_CUBLAS_CHECK(cublasSetStream(blas_, stream_));
    GAUGE_CUBLAS_CHECK(cublasLtCreate(&blas_lt_));
    begin_case();
  }

  ~CudaSession() override {
    // Errors are ignored here: a destructor cannot report them and the process may be unwinding from
    // the very failure that poisoned the context.
    if (stream_ != nullptr) {
      for (void* p : case_allocations_) (void)cudaFreeAsync(p, stream_);
      (void)cudaStreamSynchronize(stream_);
    }
    if (blas_ != nullptr) (void)cublasDestroy(blas_);
    if (blas_lt_ != nullptr) (void)cublasLtDestroy(blas_lt_);
    if (flush_buffer_ != nullptr) (void)cudaFree(flush_buffer_);
    for (int i = 0; i < 2; ++i) {
      if (starts_[i] != nullptr) (void)cudaEventDestroy(starts_[i]);
      if (stops_[i] != nullptr) (void)cudaEventDestroy(stops_[i]);
    }
    if (pool_ != nullptr) (void)cudaMemPoolDestroy(pool_);
    if (stream_ != nullptr) (void)cudaStreamDestroy(stream_);
    (void)cudaGetLastError();  // an ignored failure above must not surface as a later call's error
  }

  StreamHandle stream() override { return stream_; }
  const DeviceInfo& info() const override { return info_; }

  void begin_case() override {
    // Taken out of the list before freeing: if a free throws, no pointer stays listed that was
    // already freed (a second free could release a later allocation that reuses the address).
    // The cuBLAS workspace is about to be freed with the rest: detach it first.
    if (blas_workspace_bound_) {
      GAUGE_CUBLAS_CHECK(cublasSetWorkspace(blas_, nullptr, 0));
      blas_workspace_bound_ = false;
    }
    std::vector<void*> to_free;
    to_free.swap(case_allocations_);
    for (void* p : to_free) GAUGE_CUDA_CHECK(cudaFreeAsync(p, stream_));
    synchronize();
    GAUGE_CUDA_CHECK(cudaMemPoolTrimTo(pool_, 0));
    uint64_t zero = 0;  // the only value the high-water attributes accept: reset to current
    GAUGE_CUDA_CHECK(cudaMemPoolSetAttribute(pool_, cudaMemPoolAttrUsedMemHigh, &zero));
    GAUGE_CUDA_CHECK(cudaMemPoolSetAttribute(pool_, cudaMemPoolAttrReservedMemHigh, &zero));
    baseline_used_bytes_ = device_used_bytes();
  }

  PoolPeaks peaks() override {
    synchronize();  // stream-ordered frees must have happened for "current" to mean anything
    PoolPeaks peaks;
    peaks.used_high_bytes = pool_attribute(cudaMemPoolAttrUsedMemHigh);
    peaks.reserved_high_bytes = pool_attribute(cudaMemPoolAttrReservedMemHigh);
    const int64_t growth = device_used_bytes() - baseline_used_bytes_;
    peaks.untracked_bytes = std::max<int64_t>(0, growth - pool_attribute(cudaMemPoolAttrReservedMemCurrent));
    return peaks;
  }

  DeviceTensor upload(const HostTensor& host) override {
    DeviceTensor device{host.name(), host.dtype(), host.shape(), allocate(host.size_bytes()), host.size_bytes()};
    if (device.bytes > 0) {
      GAUGE_CUDA_CHECK(cudaMemcpyAsync(device.ptr, host.data(), device.bytes, cudaMemcpyHostToDevice, stream_));
    }
    synchronize();  // the host buffer may be freed as soon as we return
    return device;
  }

  DeviceTensor allocate_poisoned(const std::string& name, DType dtype, const Shape& shape) override {
    const size_t bytes = static_cast<size_t>(element_count(shape)) * dtype_size(dtype);
    DeviceTensor device{name, dtype, shape, allocate(bytes), bytes};
    if (bytes > 0) GAUGE_CUDA_CHECK(cudaMemsetAsync(device.ptr, 0xFF, bytes, stream_));
    return device;
  }

  HostTensor download(const DeviceTensor& device) override {
    HostTensor host(device.name, device.dtype, device.shape);
    if (host.size_bytes() != device.bytes) {
      throw RuntimeFailure("download of '" + device.name + "': the device buffer holds " +
                           std::to_string(device.bytes) + " bytes but " + shape_string(device.shape) + " " +
                           std::string(dtype_name(device.dtype)) + " needs " + std::to_string(host.size_bytes()));
    }
    if (device.bytes > 0) {
      GAUGE_CUDA_CHECK(cudaMemcpyAsync(host.data(), device.ptr, device.bytes, cudaMemcpyDeviceToHost, stream_));
    }
    synchronize();
    return host;
  }

  void* workspace(size_t bytes) override { return allocate(bytes); }

  void release(void* p) override {
    if (p == nullptr) return;
    const auto it = std::find(case_allocations_.begin(), case_allocations_.end(), p);
    if (it == case_allocations_.end()) throw RuntimeFailure("Session::release: not a workspace of this case");
    case_allocations_.erase(it);
    GAUGE_CUDA_CHECK(cudaFreeAsync(p, stream_));
  }

  cublasContext* blas() override {
    if (!blas_workspace_bound_) {
      GAUGE_CUBLAS_CHECK(cublasSetWorkspace(blas_, allocate(kBlasWorkspaceBytes), kBlasWorkspaceBytes));
      blas_workspace_bound_ = true;
    }
    return blas_;
  }
  cublasLtContext* blas_lt() override { return blas_lt_; }

  void synchronize() override {
    GAUGE_CUDA_CHECK(cudaStreamSynchronize(stream_));
    GAUGE_CUDA_CHECK(cudaGetLastError());  // launch errors that no later call has reported yet
  }

  double time_launches(const std::function<void(StreamHandle)>& launch, int batch, bool flush_l2) override {
    if (batch < 1) throw UsageError("time_launches: batch must be at least 1, got " + std::to_string(batch));
    launch(stream_);  // warm-up: module loading, first-touch, library heuristics
    GAUGE_CUDA_CHECK(cudaGetLastError());
    const double seconds = flush_l2 ? time_cold(launch, batch) : time_warm(launch, batch);
    if (!(seconds > 0) || !std::isfinite(seconds)) {
      throw RuntimeFailure("time_launches: CUDA events measured " + std::to_string(seconds) + " s");
    }
    return seconds / batch;
  }

 private:
  void* allocate(size_t bytes) {
    if (bytes == 0) return nullptr;
    // Room first, so that recording the pointer cannot throw and leak it; geometric growth.
    if (case_allocations_.size() == case_allocations_.capacity()) {
      case_allocations_.reserve(2 * case_allocations_.capacity() + 16);
    }
    void* p = nullptr;
    GAUGE_CUDA_CHECK(cudaMallocFromPoolAsync(&p, bytes, pool_, stream_));
    case_allocations_.push_back(p);
    return p;
  }

  int64_t pool_attribute(cudaMemPoolAttr attribute) {
    uint64_t value = 0;
    GAUGE_CUDA_CHECK(cudaMemPoolGetAttribute(pool_, attribute, &value));
    return static_cast<int64_t>(value);
  }

  double elapsed_seconds(cudaEvent_t start, cudaEvent_t stop) {
    GAUGE_CUDA_CHECK(cudaEventSynchronize(stop));
    float milliseconds = 0;
    GAUGE_CUDA_CHECK(cudaEventElapsedTime(&milliseconds, start, stop));
    return static_cast<double>(milliseconds) * 1e-3;
  }

  // Total seconds of `batch` back-to-back calls.
  double time_warm(const std::function<void(StreamHandle)>& launch, int batch) {
    GAUGE_CUDA_CHECK(cudaEventRecord(starts_[0], stream_));
    for (int i = 0; i < batch; ++i) launch(stream_);
    GAUGE_CUDA_CHECK(cudaGetLastError());
    GAUGE_CUDA_CHECK(cudaEventRecord(stops_[0], stream_));
    const double seconds = elapsed_seconds(starts_[0], stops_[0]);
    GAUGE_CUDA_CHECK(cudaGetLastError());
    return seconds;
  }

  // Sum over `batch` calls, each timed on its own after an untimed write over twice the L2. Two event
  // pairs alternate, so call i is enqueued before call i-1's time is read and the GPU never idles.
  double time_cold(const std::function<void(StreamHandle)>& launch, int batch) {
    if (flush_buffer_ == nullptr) throw RuntimeFailure("time_launches: the device reports no L2 to flush");
    double total = 0;
    for (int i = 0; i < batch; ++i) {
      const int slot = i % 2;
      GAUGE_CUDA_CHECK(cudaMemsetAsync(flush_buffer_, i & 0xFF, flush_bytes_, stream_));
      GAUGE_CUDA_CHECK(cudaEventRecord(starts_[slot], stream_));
      launch(stream_);
      GAUGE_CUDA_CHECK(cudaGetLastError());
      GAUGE_CUDA_CHECK(cudaEventRecord(stops_[slot], stream_));
      if (i > 0) total += elapsed_seconds(starts_[1 - slot], stops_[1 - slot]);
    }
    const int last = (batch - 1) % 2;
    total += elapsed_seconds(starts_[last], stops_[last]);
    GAUGE_CUDA_CHECK(cudaGetLastError());
    return total;
  }

  DeviceInfo info_;
  cudaStream_t stream_ = nullptr;
  cudaMemPool_t pool_ = nullptr;
  cudaEvent_t starts_[2] = {nullptr, nullptr};
  cudaEvent_t stops_[2] = {nullptr, nullptr};
  void* flush_buffer_ = nullptr;
  size_t flush_bytes_ = 0;
  std::vector<void*> case_allocations_;  // everything handed out since the last begin_case()
  cublasHandle_t blas_ = nullptr;
  cublasLtHandle_t blas_lt_ = nullptr;
  bool blas_workspace_bound_ = false;
  int64_t baseline_used_bytes_ = 0;
};

}  // namespace

std::string unavailable_reason() {
  static const std::string reason = probe_unavailable_reason();
  return reason;
}

DeviceInfo device_info() {
  // Measured once per process; a failed probe throws and is retried by the next call.
  static const DeviceInfo info = probe_device_info();
  return info;
}

std::unique_ptr<Session> Session::open() {
  const std::string reason = unavailable_reason();
  if (!reason.empty()) throw RuntimeFailure(reason);
  auto session = std::make_unique<CudaSession>();
  session->initialize();
  return session;
}

}  // namespace gauge::gpu
