# fp8 / tf32 casts, stochastic rounding to fp16 / fp8, fp8 scaling: cases and tests.
list(APPEND precision_cases fp8_cases.cc)
list(APPEND precision_tests fp8_test.cc sr_test.cc scaling_test.cc fp8_launch_test.cc)
