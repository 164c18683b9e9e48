# Fused multi-tensor unscale + Inf/NaN check and the device-side loss-scale update (the launch
# arithmetic lives in the plain header unscale_plan.h, CPU-tested).
target_sources(gauge_optimized_precision PRIVATE loss_scale.cu)
target_link_libraries(gauge_optimized_precision PUBLIC gauge_harness)
