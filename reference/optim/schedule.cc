#include "reference/optim/schedule.h"

#include <cmath>
#include <numbers>
#include <string>

#include "harness/error.h"

namespace gauge::reference::optim {

using gauge::optim::Schedule;
using gauge::optim::ScheduleShape;

double scheduled_lr(double base_lr, const Schedule& schedule, int64_t step) {
  gauge::optim::validate(schedule);
  if (!std::isfinite(base_lr) || base_lr < 0.0) {
    throw UsageError("lr schedule: base lr = " + std::to_string(base_lr) + " is negative or not finite");
  }
  if (step < 1) throw UsageError("lr schedule: step " + std::to_string(step) + " is below 1 (steps count from 1)");

  const auto t = static_cast<double>(step);
  const auto warmup = static_cast<double>(schedule.warmup_steps);
  if (step <= schedule.warmup_steps) return base_lr * t / warmup;
  if (schedule.after_warmup == ScheduleShape::constant) return base_lr;
  if (step >= schedule.total_steps) return schedule.floor_lr;

  const double progress = (t - warmup) / (static_cast<double>(schedule.total_steps) - warmup);  // in (0, 1)
  const double span = base_lr - schedule.floor_lr;
  if (schedule.after_warmup == ScheduleShape::linear) return schedule.floor_lr + span * (1.0 - progress);
  return schedule.floor_lr + span * (1.0 + std::cos(std::numbers::pi * progress)) / 2.0;
}

}  // namespace gauge::reference::optim
