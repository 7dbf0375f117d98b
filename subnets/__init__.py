"""Model families, weight-shared subnet pools, sampling, profiling and catalogs."""
