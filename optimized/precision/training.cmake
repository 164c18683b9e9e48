# Fused multi-tensor unscale + Inf/NaN check and the device-side loss-scale update (the launch
# arithmetic lives in the plain header unscale_plan.h, CPU-tested).
target_sources(gauge_optimized_precision PRIVATE loss_scale.cu)
target_link_libraries(gauge_optimized_precision PUBLIC gauge_harness)
# The GPU mixed-precision MLP recipes: a target of their own, since they sit on top of the nn layers
# and the optimizer (gauge_optimized_optim links gauge_optimized_nn; neither links this library).
add_library(gauge_optimized_precision_recipes STATIC mlp_recipes.cu)
target_link_libraries(gauge_optimized_precision_recipes PUBLIC gauge_optimized_precision gauge_optimized_nn
                      gauge_optimized_optim gauge_harness gauge_reference_precision)
