"""Where a live provider is and which environment variables hold its credentials (its contract's ``live``)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from imagegen_conformance import contracts

__all__ = ["LiveTarget", "live_target"]


@dataclass(frozen=True)
class LiveTarget:
    provider: str
    key_var: str
    base_var: str
    default_base: str | None  # None: the user must say (self-hosted Dify)
    extra_vars: tuple[str, ...] = ()  # also required (Cloudsway's endpoint path)
    client_env: Mapping[str, str] = field(default_factory=dict)  # reference client var <- user's var

    def missing(self, environ: Mapping[str, str] | None = None) -> list[str]:
        env = os.environ if environ is None else environ
        need = [self.key_var, *self.extra_vars]
        if self.default_base is None:
            need.append(self.base_var)
        return [v for v in need if not env.get(v)]

    @property
    def base_url(self) -> str:
        return (os.environ.get(self.base_var) or self.default_base or "").rstrip("/")

    @property
    def api_key(self) -> str:
        return os.environ.get(self.key_var, "")

    def client_extra(self, environ: Mapping[str, str]) -> dict[str, str]:
        """The variables the reference client reads besides ``IMAGEGEN_*``, from the user's."""
        return {dest: environ[src].strip("/") for dest, src in self.client_env.items() if environ.get(src)}


def live_target(provider: str) -> LiveTarget | None:
    """The provider's live endpoint, or None when its contract names none."""
    live = contracts.load(provider).behaviour.live
    if live is None:
        return None
    return LiveTarget(contracts.canonical(provider), live.key_var, live.base_url_var, live.base_url,
                      live.required_vars, dict(live.client_env))
