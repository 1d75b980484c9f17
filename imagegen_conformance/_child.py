"""``python -m imagegen_conformance._child module:function``: a Python callable as a command.

The harness's runner starts a callable client this way so that it runs in its own process,
where the time frame (libfaketime) reaches its clocks as it reaches a command's. It lives here,
outside ``harness``, so that starting it imports only the client's own module. The environment
is the client's; the result is printed as JSON, an exception as ``{"error": ...}`` with exit 1.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import os
import sys
from typing import Any


def main(argv: list[str]) -> int:
    if len(argv) != 1 or ":" not in argv[0]:
        print("usage: python -m imagegen_conformance._child module:function", file=sys.stderr)
        return 2
    module_name, _, attr = argv[0].partition(":")
    func = getattr(importlib.import_module(module_name), attr)
    try:
        if inspect.iscoroutinefunction(func):
            output: Any = asyncio.run(func(dict(os.environ)))
        else:
            output = func(dict(os.environ))
    except Exception as exc:
        data = getattr(exc, "to_dict", lambda: None)()
        if not isinstance(data, dict):
            data = {"error": {"message": f"{type(exc).__name__}: {exc}"}}
        print(json.dumps(data, default=str))
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(output, default=str))
    ok = isinstance(output, dict) and not output.get("error")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
