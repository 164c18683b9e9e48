# cuBLASLt GEMMs per dtype (the plan's problem checks live in the plain header gemm_problem.h).
target_sources(gauge_optimized_precision PRIVATE gemm.cu)
target_link_libraries(gauge_optimized_precision PUBLIC CUDA::cublasLt gauge_harness)
