"""dynofa: a runtime manager for dynamic DNNs on heterogeneous embedded SoCs.

This package holds the shared vocabulary (budgets, operating points, the catalog
schema), configuration, the ZeroMQ protocol and client, and the CLI. It never
imports torch at import time so that apps can use :mod:`dynofa.client` cheaply.
"""

__version__ = "0.1.0"
