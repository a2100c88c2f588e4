"""The baseline: bare Starlette answering a fixed redirect to a product URL of about 200
characters (as long as a landing URL with its UTM values and click id), with the same uvicorn
settings as the service."""

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

LOCATION = (
    "https://www.aliexpress.com/item/1005006123456789.html?spm=a2g0o.productlist.main.1"
    "&utm_source=ig&utm_medium=social&utm_campaign=ig_202411_bench&utm_content=load"
    "&mc_click=0193a5b2c4d5e6f708192a3b4c5d"
)


async def fixed_redirect(request: Request) -> Response:
    return RedirectResponse(LOCATION, status_code=302, headers={"cache-control": "no-store"})


app = Starlette(routes=[Route("/e/{code}", fixed_redirect)])
