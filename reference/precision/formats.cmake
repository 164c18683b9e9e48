# fp8 (E4M3 / E5M2) and tf32 casts, stochastic rounding to fp16 / fp8 (in stochastic_rounding.cc),
# per-tensor fp8 scaling (amax, current and delayed scaling).
target_sources(gauge_reference_precision PRIVATE fp8.cc scaling.cc)
