#!/usr/bin/env python3
"""api/openapi.yaml is a valid OpenAPI 3 document (openapi-spec-validator, from PyPI via pydeps), and
every operation declares its error answers with the shared Error schema, so a client can rely on
{"error": {"code", "message", "field"}}."""
import os
import sys

import pydeps  # beside this script (its folder is sys.path[0]); used only by tests/contract

pydeps.reexec_in_venv()

from openapi_spec_validator import validate  # noqa: E402
from openapi_spec_validator.readers import read_from_filename  # noqa: E402

path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.environ["RX_SOURCE_DIR"], "api", "openapi.yaml")
spec, _ = read_from_filename(path)
validate(spec)  # raises with the failing JSON path
ops = 0
for route, item in spec["paths"].items():
    for method, op in item.items():
        ops += 1
        for status, resp in op["responses"].items():
            if int(status) >= 400:
                ref = resp.get("$ref") or str(resp.get("content", {}))
                assert "Error" in ref, f"{method.upper()} {route} {status}: error answer without the Error schema"
assert ops >= 11, f"only {ops} operations in {path}"
print(f"openapi: {path} is valid OpenAPI {spec['openapi']} ({ops} operations)")
