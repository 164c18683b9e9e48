# Mixed-precision training: the dynamic loss scaler (PyTorch GradScaler semantics) and the MLP
# training recipes (fp32; bf16 compute + fp32 master; fp16 compute + fp32 master with and without
# loss scaling; pure bf16), built on the reference nn layers. gauge_harness: the counting allocator
# (HostVector) through which the recipes allocate what they store, so bytes per parameter are measured.
target_sources(gauge_reference_precision PRIVATE loss_scaler.cc mlp_recipes.cc)
target_link_libraries(gauge_reference_precision PUBLIC gauge_harness gauge_reference_nn)
