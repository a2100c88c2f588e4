import httpx


async def test_healthz(client: httpx.AsyncClient) -> None:
    r = await client.get("/healthz")
    assert r.status_code == 200


async def test_readyz_when_both_answer(client: httpx.AsyncClient) -> None:
    r = await client.get("/readyz")
    assert r.status_code == 200
    assert r.json()["status"] == "ready"


async def test_unknown_route_is_the_error_envelope(client: httpx.AsyncClient) -> None:
    r = await client.get("/v1/nothing-here")
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "ERR_404"


async def test_wrong_method_is_the_error_envelope(client: httpx.AsyncClient) -> None:
    r = await client.delete("/v1/codes")
    assert r.status_code == 405
    assert r.json()["error"]["code"] == "ERR_405"


async def test_openapi_lists_every_v1_route(app: object, client: httpx.AsyncClient) -> None:
    from service.app import ROUTES

    doc = (await client.get("/openapi.json")).json()
    assert doc["openapi"].startswith("3.")
    for route in ROUTES:
        if route.path.startswith("/v1"):
            for method in route.methods or ():
                if method != "HEAD":
                    assert method.lower() in doc["paths"][route.path], (method, route.path)


async def test_metrics_families_present_from_start(client: httpx.AsyncClient) -> None:
    text = (await client.get("/metrics")).text
    for line in (
        'mcode_clicks_total{reason="valid"}',
        'mcode_clicks_total{reason="ERR_DUP"}',
        "mcode_redirect_duration_seconds_bucket",
        'mcode_events_total{status="rejected",type="order"}',
        'mcode_attributions_total{result="ERR_WINDOW"}',
        "mcode_click_backlog",
        'mcode_dependency_errors_total{dependency="postgres"}',
    ):
        assert line in text, line


async def test_readyz_names_what_is_down() -> None:
    from asgi_lifespan import LifespanManager

    from service.app import create_app
    from tests.conftest import make_settings

    app = create_app(make_settings(redis_url="redis://127.0.0.1:1/0"))
    async with LifespanManager(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            r = await c.get("/readyz")
            assert r.status_code == 503
            assert r.json()["down"] == ["redis"]
            text = (await c.get("/metrics")).text
            assert 'mcode_dependency_errors_total{dependency="redis"}' in text
