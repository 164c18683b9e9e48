// CUDA per-tensor fp8 scaling, bit-identical to reference/precision/scaling.h: amax reduction and the
// scaled cast y = fp8(x * scale), for current scaling (scale from this tensor's amax) and delayed
// scaling (scale from an amax history, this tensor's amax reduced in the same pass and recorded).
// Everything is enqueued on `stream`; nothing synchronizes with the host, every scalar stays on the
// device. Host-side checks (UsageError): n >= 0, element-aligned non-overlapping x / y, window in
// [1, 1024], margin in [0, 32]. Data-dependent bad input cannot throw from a kernel: a NaN or Inf amax
// gives scale = NaN (see optimized/precision/scaling.cuh), visible in the scalar outputs.
#pragma once

#include <cstddef>
#include <cstdint>

#include "harness/stream.h"
#include "reference/precision/fp8_format.h"

namespace gauge::optimized::precision {

struct Fp8Scaling {
  gauge::precision::Fp8Format format = gauge::precision::Fp8Format::e4m3;
  gauge::precision::Fp8Overflow overflow = gauge::precision::Fp8Overflow::saturate;
  int margin = 0;
};

// Device scratch of the scaling kernels: one partial amax per block and the arrival counter of the
// delayed kernel's last-block reduction. Zero it once with clear_scaling_workspace before the first
// call (the counter resets itself after every launch); one workspace serves one stream at a time.
size_t scaling_workspace_bytes();
void clear_scaling_workspace(void* workspace, StreamHandle stream);

// Current scaling: two launches, the amax kept on the device between them (x is read twice; see the
// napkin math in scaled_cast.cu). Writes y [n] and the scalars *amax, *scale, *scale_inv.
void current_scaled_cast(const float* x, uint8_t* y, int64_t n, const Fp8Scaling& scaling, float* amax, float* scale,
                         float* scale_inv, void* workspace, StreamHandle stream);

// Delayed scaling, one launch: scale from history [window] (newest first) by `algorithm`, y [n] cast
// with it, this tensor's amax reduced in the same pass; the last block to finish writes *amax,
// new_history [window] = {amax, history[0 .. window-2]}, *next_scale (from new_history), and the
// *scale / *scale_inv used. history and new_history must not overlap.
void delayed_scaled_cast(const float* x, uint8_t* y, int64_t n, const float* history, int window,
                         gauge::precision::AmaxAlgorithm algorithm, const Fp8Scaling& scaling, float* scale,
                         float* scale_inv, float* amax, float* new_history, float* next_scale, void* workspace,
                         StreamHandle stream);

}  // namespace gauge::optimized::precision
