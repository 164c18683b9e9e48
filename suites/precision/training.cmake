# Mixed-precision training: the unscale case and the recipe cases, the loss scaler's state machine,
# the unscale launch arithmetic and the CUDA unscale / update kernels (skipped without a GPU), and the
# MLP recipes (loss curves, fp16 underflow, bytes per parameter).
list(APPEND precision_cases training_cases.cc)
list(APPEND precision_tests loss_scaler_test.cc mlp_recipes_test.cc mlp_recipes_gpu_test.cc)
if(GAUGE_HAS_CUDA)
  list(APPEND precision_link gauge_optimized_precision_recipes)
endif()
