"""Conformance profiles the harness supplies while a contract has no (complete) ``conformance:``
section; data only (``<provider>.yaml``), shipped as package data."""
