# GEMM in every precision: one case per dtype configuration, and the GEMM tests.
list(APPEND precision_cases gemm_cases.cc)
list(APPEND precision_tests gemm_test.cc)
