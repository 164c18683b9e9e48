// Reference learning-rate schedules: linear warm-up, then constant, linear decay or cosine decay to a
// floor. The optimizer step takes the learning rate already scheduled (here and on the CUDA side), so
// the sequence of learning rates is part of the run both sides replay; it is checked against closed
// forms in suites/optim.
//
// For step t (1-based, the t-th applied optimizer step), base learning rate L, warm-up W, total S,
// floor F:
//   t <= W                  L * t / W               (so step 1 already moves, and step W reaches L)
//   constant, t > W         L
//   linear,   W < t < S     F + (L - F) * (1 - p)              p = (t - W) / (S - W)
//   cosine,   W < t < S     F + (L - F) * (1 + cos(pi p)) / 2
//   linear or cosine, t >= S (and t > W)   F
// (With W = 0 there is no warm-up phase; the formulas are continuous at t = W and at t = S.)
#pragma once

#include <cstdint>

#include "reference/optim/config.h"

namespace gauge::reference::optim {

// The learning rate of step `step` (>= 1). Throws gauge::UsageError for a step below 1, a negative or
// non-finite base learning rate, or a schedule that gauge::optim::validate rejects.
double scheduled_lr(double base_lr, const gauge::optim::Schedule& schedule, int64_t step);

}  // namespace gauge::reference::optim
