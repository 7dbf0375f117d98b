"""Evaluation tools that are not part of the product: a simulated SoC and an oracle.

Neither is shipped in the wheel nor registered as a daemon policy: they exist to judge
the policies (``benchmarks.simulated_soc``, the tests).
"""
