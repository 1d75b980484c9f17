"""dify-client-python, unmodified, as its README uses it: a workflow run, blocking or streaming.

Only ``api_base`` is set (the self-hosted Dify's address); every timeout is the library's own.
"""

import json
import os
import sys

from dify_client import models
from dify_client._clientx import Client  # dify-client also ships a dify_client/__init__.py

base = os.environ["IMAGEGEN_BASE_URL"]
client = Client(api_key=os.environ["IMAGEGEN_API_KEY"], api_base=f"{base}/v1")
request = models.WorkflowsRunRequest(**json.loads(os.environ["IMAGEGEN_REQUEST"]))
try:
    if request.response_mode == models.ResponseMode.STREAMING:
        outputs = None
        for event in client.run_workflows(request):
            data = event.data if isinstance(event.data, dict) else event.data.model_dump()
            if str(event.event) == "workflow_finished":
                if data["status"] != "succeeded":
                    raise RuntimeError(f"the run ended {data['status']}: {data.get('error')}")
                outputs = data["outputs"]
            elif str(event.event) == "error":
                raise RuntimeError(f"the run failed: {data}")
        if outputs is None:
            raise RuntimeError("the stream ended without workflow_finished")
    else:
        finished = client.run_workflows(request).data
        if finished.status != "succeeded":
            raise RuntimeError(f"the run ended {finished.status}: {finished.error}")
        outputs = finished.outputs or {}
except Exception as exc:  # the harness reads the error from stdout and the exit status
    print(json.dumps({"error": {"message": f"{type(exc).__name__}: {exc}"}}))
    sys.exit(1)
# Dify's file links are relative to the host (FILES_URL unset, as in the seed).
print(json.dumps({"images": [base + file["url"] for file in outputs["files"]]}))
