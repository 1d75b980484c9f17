"""Reference clients: one well-behaved client per provider, run by the harness like any other.

Each module has ``run(env) -> {"images": [...]}`` (the ``module:function`` form) and runs as
``python -m imagegen_conformance.clients.<provider>`` (the command form: JSON on stdout, non-zero exit on
failure). They read only environment variables (``IMAGEGEN_*``), never the contracts.
"""

from __future__ import annotations

__all__: list[str] = []
