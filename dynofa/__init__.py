"""dynofa: a runtime manager for dynamic DNNs on heterogeneous embedded SoCs.

This package holds the shared vocabulary (budgets, operating points, the catalog
schema), configuration, the ZeroMQ protocol and client. It never imports torch at
import time so that apps can use :mod:`dynofa.client` cheaply, and never imports the
layers above it (``subnets``, ``governors``, ``service``, ``cli``).
"""

__version__ = "0.1.0"
