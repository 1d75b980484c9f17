"""imagegen-conformance: mock image-generation providers, a contract-driven harness, live checks.

The distribution installs one import name, so it never shadows (nor is shadowed by) a
project's own ``contracts``, ``mocks`` or ``harness`` packages. The repository keeps those as
its top-level folders; they are mapped under this namespace:

>>> from imagegen_conformance import contracts, mocks, harness
>>> from imagegen_conformance.mocks import MockServer
"""

from __future__ import annotations

__version__ = "0.1.0"

#: How the tools the core install leaves out (Hypothesis, Schemathesis) are installed.
CHECK_EXTRA = "pip install 'imagegen-conformance[check]'"


def missing_extra(module: str, needs: str, exc: ImportError) -> ImportError:
    """What a module of the ``[check]`` extra raises when its tools are not installed."""
    return ImportError(f"{module} needs {needs} ({exc}); install with: {CHECK_EXTRA}")
