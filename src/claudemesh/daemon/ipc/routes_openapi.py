"""``GET /v1/openapi.json``: the OpenAPI 3.1 document of this API.

The document is written in ``docs/openapi.yaml``; ``scripts/openapi`` renders it to the
``openapi.json`` beside this module, which the package ships. The daemon reads that file
on the first request and serves the same bytes ever after: no YAML parser at run time.
"""

from __future__ import annotations

import functools
from importlib import resources

from aiohttp import web

__all__ = ["get_openapi", "openapi_document"]


@functools.cache
def openapi_document() -> bytes:
    """The JSON document, read once from the package."""
    return resources.files(__package__).joinpath("openapi.json").read_bytes()


async def get_openapi(request: web.Request) -> web.Response:
    return web.Response(body=openapi_document(), content_type="application/json",
                        charset="utf-8")
