"""Where the live providers are and which environment variables hold their credentials."""

from __future__ import annotations

import os
from dataclasses import dataclass

__all__ = ["LIVE", "LiveTarget", "live_target"]


@dataclass(frozen=True)
class LiveTarget:
    provider: str
    key_var: str
    base_var: str
    default_base: str | None  # None: the user must say (self-hosted Dify)
    extra_vars: tuple[str, ...] = ()  # also required (Cloudsway's endpoint path)

    def missing(self) -> list[str]:
        need = [self.key_var, *self.extra_vars]
        if self.default_base is None:
            need.append(self.base_var)
        return [v for v in need if not os.environ.get(v)]

    @property
    def base_url(self) -> str:
        return (os.environ.get(self.base_var) or self.default_base or "").rstrip("/")

    @property
    def api_key(self) -> str:
        return os.environ.get(self.key_var, "")


LIVE = {
    "cloudsway": LiveTarget("cloudsway", "CLOUDSWAY_API_KEY", "CLOUDSWAY_BASE_URL",
                            "https://genaiapi.cloudsway.net", ("CLOUDSWAY_ENDPOINT_PATH",)),
    "acedata": LiveTarget("acedata", "ACEDATACLOUD_API_TOKEN", "ACEDATA_BASE_URL",
                          "https://api.acedata.cloud"),
    "fal": LiveTarget("fal", "FAL_KEY", "FAL_QUEUE_BASE_URL", "https://queue.fal.run"),
    "yunyx": LiveTarget("yunyx", "YUNYX_API_KEY", "YUNYX_BASE_URL", "https://api.yunyx.top"),
    "dify": LiveTarget("dify", "DIFY_API_KEY", "DIFY_BASE_URL", None),
}


def live_target(provider: str) -> LiveTarget:
    return LIVE[provider]
