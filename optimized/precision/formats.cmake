# fp8 (E4M3 / E5M2) and tf32 casts, stochastic rounding to fp16 / fp8, fused amax + scaled fp8 cast.
target_sources(gauge_optimized_precision PRIVATE fp8_casts.cu stochastic_round.cu scaled_cast.cu)
