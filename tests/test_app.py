import httpx


async def test_hot_path_leaves_other_shapes_to_the_router(client: httpx.AsyncClient) -> None:
    assert (await client.get("/e/abc/def")).status_code == 404
    assert (await client.get("/e/")).status_code == 404
    r = await client.post("/e/AAAAAAAAAAAAAA")
    assert (r.status_code, r.json()["error"]["code"]) == (405, "ERR_405")


async def test_lifespan_and_state_pass_through(app: object) -> None:
    from service.app import HotPath

    assert isinstance(app, HotPath)
    assert app.state.ctx.settings.env == "test"
