# target_sources(gauge_reference_precision PRIVATE ...) for this part
