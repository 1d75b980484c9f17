from __future__ import annotations

import importlib

from contracts import PROVIDERS, canonical

from .engine._provider import Provider

__all__ = ["provider_class"]

#: provider id -> "module:Class". Adding a provider is one module and one line here.
_CLASSES = {
    "cloudsway": "mocks.cloudsway:CloudswayProvider",
    "acedata": "mocks.acedata:AceDataProvider",
    "fal": "mocks.fal:FalProvider",
    "yunyx": "mocks.yunyx:YunyxProvider",
    "dify": "mocks.dify:DifyProvider",
}
assert set(_CLASSES) == set(PROVIDERS)


def provider_class(provider: str) -> type[Provider]:
    """The simulator class of a provider id or alias."""
    name = canonical(provider)
    module_name, _, cls_name = _CLASSES[name].partition(":")
    module = importlib.import_module(module_name)
    cls: type[Provider] = getattr(module, cls_name)
    return cls
