# target_sources(gauge_optimized_precision PRIVATE ...) for this part
