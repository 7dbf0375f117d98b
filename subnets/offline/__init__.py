"""The offline pipeline: sampling, profiling, regression, datasets, training and catalog building.

Nothing here runs in the daemon: it serves catalogs built by this package, and imports only the
runtime half of ``subnets`` (families, pool, catalog loading, the start-up re-profiling in
:mod:`subnets.reprofile`). The catalog builder is :func:`subnets.offline.build.build_catalog`.
"""
