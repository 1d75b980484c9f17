"""fal-client, unmodified, as its README uses it.

It reads FAL_KEY and FAL_QUEUE_RUN_HOST, hard-codes https and trusts SSL_CERT_FILE, so the
harness runs it with ``--tls``.
"""

import json
import os

import fal_client

result = fal_client.subscribe("fal-ai/flux-1/dev", arguments=json.loads(os.environ["IMAGEGEN_REQUEST"]))
print(json.dumps({"images": [image["url"] for image in result["images"]]}))
