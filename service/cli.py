"""`mcode serve | writer | migrate | import | demo`."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

import click
from pydantic import ValidationError
from tqdm import tqdm

from service.settings import Settings


def _settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        messages = "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in exc.errors())
        raise click.ClickException(f"refusing to start: {messages}") from None


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Log at DEBUG level.")
def main(verbose: bool) -> None:
    """Marketing Code service."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


@main.command()
def migrate() -> None:
    """Apply database migrations (creating the database if needed)."""
    from service.store import postgres

    applied = asyncio.run(postgres.migrate(_settings().database_url))
    click.echo(f"applied: {', '.join(applied)}" if applied else "schema is up to date")


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--workers", default=1, show_default=True, type=int)
def serve(host: str, port: int, workers: int) -> None:
    """Serve the HTTP API and redirects (with the click writer, unless MCODE_EMBEDDED_WRITER=0)."""
    import uvicorn

    from service.store import postgres

    settings = _settings()
    asyncio.run(postgres.migrate(settings.database_url))
    uvicorn.run(
        "service.app:app",
        host=host,
        port=port,
        workers=workers,
        # The service reads X-Forwarded-For itself, and only from MCODE_TRUSTED_PROXIES.
        proxy_headers=False,
        server_header=False,
        access_log=False,
        timeout_graceful_shutdown=10,
    )


@main.command()
@click.option("--batch", default=200, show_default=True, help="Stream entries (each up to 256 clicks) read at once.")
@click.option("--claim-idle-ms", default=15000, show_default=True,
              help="Take over clicks another writer read but left unacknowledged this long.")
@click.option("--metrics-port", type=int, default=None,
              help="Serve this writer's Prometheus metrics (clicks written, rejected, dependency errors) "
                   "on this port at /metrics.")
@click.option("--metrics-host", default="0.0.0.0", show_default=True)  # noqa: S104 - scraped from elsewhere
def writer(batch: int, claim_idle_ms: int, metrics_port: int | None, metrics_host: str) -> None:
    """Drain the click streams into Postgres (run several for more throughput)."""
    import signal

    from service import metrics
    from service.app import close_context, new_writer, open_context

    settings = _settings()
    if metrics_port is not None:
        metrics.serve_in_thread(metrics_host, metrics_port)

    async def run() -> None:
        ctx = await open_context(settings)
        worker = new_writer(ctx)
        worker.batch, worker.claim_idle_ms = batch, claim_idle_ms
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, worker.stop)
        try:
            await worker.run()
        finally:
            await worker.close()
            await close_context(ctx)

    asyncio.run(run())


@main.command(name="import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Write the CSV with results here.")
def import_(file: Path, out: Path | None) -> None:
    """Create codes from a CSV file (same columns as POST /v1/codes/bulk, any number of rows)."""
    from service import imports
    from service.app import close_context, open_context
    from service.errors import ApiError

    settings = _settings()
    try:
        upload = imports.parse(file.read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError:
        raise click.ClickException(f"{file} is not UTF-8") from None
    except ApiError as err:
        raise click.ClickException(f"{file}: {err.message} {err.fields or ''}") from None

    async def run() -> imports.Outcome:
        ctx = await open_context(settings)
        try:
            with tqdm(total=len(upload.records), unit="row", file=sys.stderr) as bar:
                return await imports.run(ctx, upload, None, progress=lambda: bar.update())
        finally:
            await close_context(ctx)

    outcome = asyncio.run(run())
    for row in outcome.rows:
        if "error" in row:
            click.echo(f"row {row['row']}: {imports.error_text(row['error'])}", err=True)
    if out is not None:
        out.write_text(imports.as_csv(upload, outcome), encoding="utf-8")
    click.echo(f"created {outcome.created}, existing {outcome.existing}, failed {outcome.failed}")
    if outcome.failed:
        sys.exit(1)


@main.command()
def demo() -> None:
    """Create a demo seller, product, rate and codes, and print what to try next."""
    import json
    import time
    from decimal import Decimal

    from service import auth
    from service.app import close_context, open_context
    from service.catalog import code_values, create_code
    from service.store import catalog as sql

    settings = _settings()
    pattern = settings.allowed_hosts[0]
    host = "www." + pattern[2:] if pattern.startswith("*.") else pattern

    async def run() -> tuple[str, list[str]]:
        ctx = await open_context(settings)
        try:
            async with ctx.pool.acquire() as conn:
                await sql.upsert_seller(conn, "demo-seller", "Demo Kids Shop", "active", True, True)
                await sql.upsert_product(conn, "demo-product", "demo-seller", f"https://{host}/item/1005001.html",
                                         "toys", "listed", 100)
                await sql.set_rate(conn, "toys", Decimal("0.08"))
                key, key_hash = auth.new_seller_key()
                await sql.add_seller_key(conn, "demo-seller", key_hash)
                urls = []
                for source, medium in (("ig", "social"), ("tt", "video"), ("newsletter", "email")):
                    values = code_values({
                        "seller_id": "demo-seller", "product_id": "demo-product", "utm_source": source,
                        "utm_medium": medium, "utm_campaign": f"{source}_202411_demo", "utm_content": "launch",
                    })
                    row, _ = await create_code(ctx, conn, values)
                    urls.append(ctx.short_url(row["code"]))
            return key, urls
        finally:
            await close_context(ctx)

    key, urls = asyncio.run(run())
    click.echo("seller demo-seller, product demo-product (category toys, rate 0.08)")
    click.echo(f"seller key (shown once): {key}")
    for url in urls:
        click.echo(f"  {url}")
    body = json.dumps({"event_id": "demo-order-1", "type": "order", "occurred_at": "<now, RFC 3339>",
                       "order_id": "demo-order-1", "click_id": "<mc_click from the redirect>",
                       "amount": "19.99", "currency": "USD", "category": "toys"})
    t = str(int(time.time()))
    click.echo("\nclick one (curl -i the URL), then post the order with its mc_click; sign it as:")
    click.echo("  Mcode-Signature: t=<unix time>,v1=<hex HMAC-SHA256(secret, '<t>.<body>')>")
    example = auth.sign(settings.event_secrets[0], t, body.encode())
    click.echo(f"  e.g. for the body {body}\n  at t={t}: v1={example}")
    click.echo(f"reports: curl -H 'Authorization: Bearer {key}' "
               f"'{settings.public_url}/v1/reports/traffic?group_by=day,channel'")


if __name__ == "__main__":
    main()
