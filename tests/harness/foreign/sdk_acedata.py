"""acedatacloud, unmodified, as its README uses it: Flux, waiting on the task.

It reads ACEDATACLOUD_API_TOKEN; only ``base_url`` is set (the harness's mock).
"""

import json
import os

from acedatacloud import AceDataCloud

request = json.loads(os.environ["IMAGEGEN_REQUEST"])
request["async_"] = request.pop("async", None)
with AceDataCloud(base_url=os.environ["IMAGEGEN_BASE_URL"]) as client:
    handle = client.flux.generate(**request, wait=True)
    print(json.dumps({"images": handle.urls()}))
