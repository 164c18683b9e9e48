# GEMM in every precision: the fp64 truth (cblas_dgemm) and the faithful low-precision reference
# (cblas_sgemm). OpenBLAS comes from Debian's libopenblas-dev (scripts/setup).
target_sources(gauge_reference_precision PRIVATE gemm.cc)
find_path(GAUGE_CBLAS_INCLUDE_DIR cblas.h PATH_SUFFIXES x86_64-linux-gnu aarch64-linux-gnu openblas)
find_library(GAUGE_OPENBLAS_LIBRARY NAMES openblas)
if(NOT GAUGE_CBLAS_INCLUDE_DIR OR NOT GAUGE_OPENBLAS_LIBRARY)
  message(FATAL_ERROR "OpenBLAS not found (cblas.h and libopenblas): install libopenblas-dev (scripts/setup)")
endif()
target_include_directories(gauge_reference_precision PRIVATE ${GAUGE_CBLAS_INCLUDE_DIR})
# gauge_harness: HostTensor and the counting allocator for the reference's decoded operands.
target_link_libraries(gauge_reference_precision PUBLIC ${GAUGE_OPENBLAS_LIBRARY} gauge_harness)
