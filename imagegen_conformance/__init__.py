"""imagegen-conformance: mock image-generation providers, a contract-driven harness, live checks.

The distribution installs one import name, so it never shadows (nor is shadowed by) a
project's own ``contracts``, ``mocks`` or ``harness`` packages. The repository keeps those as
its top-level folders; they are mapped under this namespace:

>>> from imagegen_conformance import contracts, mocks, harness
>>> from imagegen_conformance.mocks import MockServer
"""

from __future__ import annotations

__version__ = "0.1.0"
