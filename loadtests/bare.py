"""The baseline: bare Starlette answering a fixed 302, served with the same uvicorn settings."""

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

LOCATION = "https://www.aliexpress.com/item/1.html?utm_source=ig&utm_medium=social&mc_click=0"


async def fixed_redirect(request: Request) -> Response:
    return Response(status_code=302, headers={"location": LOCATION, "cache-control": "no-store"})


app = Starlette(routes=[Route("/e/{code}", fixed_redirect)])
