"""`mcode serve | writer | migrate | import | demo | event`."""

from __future__ import annotations

import asyncio
import logging
import os
import shlex
import sys
from pathlib import Path
from typing import Any, BinaryIO

import click
from pydantic import ValidationError
from tqdm import tqdm

from service.settings import Settings, describe
from service.startup import StartupError, retry_at_start, where, why

log = logging.getLogger("mcode")

LOG_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
# A browser's User-Agent for the demo's click: curl's own is a bot's, and a bot's click never earns.
DEMO_USER_AGENT = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
                   "Chrome/124.0 Safari/537.36")
DEV_SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "dev.sh"


def _log_level() -> int:
    """MCODE_LOG_LEVEL (debug, info, warning, error; default info). At debug a failure to start
    shows its traceback; otherwise it is one line."""
    name = os.environ.get("MCODE_LOG_LEVEL", "info").strip().lower() or "info"
    if name not in LOG_LEVELS:
        raise StartupError(f"MCODE_LOG_LEVEL: {name!r} is not one of {', '.join(LOG_LEVELS)}")
    return LOG_LEVELS[name]


class _Mcode(click.Group):
    """Every command: what stops it at start is one line on stderr and exit status 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except StartupError as exc:
            if logging.getLogger().isEnabledFor(logging.DEBUG):
                raise
            click.echo(f"mcode: {exc}", err=True)
            ctx.exit(1)


def _settings() -> Settings:
    from pydantic_settings import SettingsError

    try:
        return Settings()
    except ValidationError as exc:
        raise StartupError(f"refusing to start: {describe(exc)}") from exc
    except SettingsError as exc:
        raise StartupError(f"refusing to start: {why(exc)}") from exc


def _local_url(host: str, port: int) -> str:
    """The address this machine reaches a server bound to host:port at."""
    if host in ("0.0.0.0", ""):  # noqa: S104 - bound to every address; this machine reaches it here
        host = "127.0.0.1"
    elif host in ("::", "[::]"):
        host = "::1"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}"


async def _redis_answers(url: str) -> None:
    """PING MCODE_REDIS_URL (any of its comma-separated nodes, in order), retried while it does not answer."""
    import redis.asyncio as aioredis
    from redis.exceptions import AuthenticationError, RedisError, ResponseError

    urls = [u.strip() for u in url.split(",") if u.strip()]
    what = "Redis at " + ", ".join(where(u, 6379) for u in urls)

    async def attempt(limit_s: float) -> None:
        failure: Exception = StartupError("MCODE_REDIS_URL is empty")
        for one in urls:
            try:
                client = aioredis.Redis.from_url(one, socket_connect_timeout=limit_s, socket_timeout=limit_s)
            except ValueError as exc:
                raise StartupError(f"MCODE_REDIS_URL: {why(exc)}") from exc
            try:
                await client.ping()
                return
            except (AuthenticationError, ResponseError) as exc:  # it answered, and said no
                raise StartupError(f"{what} refused us: {why(exc)}") from exc
            except (RedisError, OSError) as exc:
                failure = exc
            finally:
                await client.aclose()
        raise failure

    await retry_at_start(what, attempt, (RedisError, OSError))


async def _dependencies_answer(settings: Settings) -> None:
    """Postgres and Redis both answer (each retried for MCODE_START_WAIT_S, side by side), then
    the database is migrated; when either does not, StartupError names each that did not."""
    import asyncpg

    from service.store import postgres

    async def postgres_answers() -> None:
        try:
            conn = await postgres.connect_at_start(settings.database_url)
        except asyncpg.InvalidCatalogNameError:
            return  # the server answers; migrate() creates the database
        await conn.close()

    outcomes = await asyncio.gather(postgres_answers(), _redis_answers(settings.redis_url), return_exceptions=True)
    failed = [o for o in outcomes if isinstance(o, BaseException)]
    for other in (o for o in failed if not isinstance(o, StartupError)):
        raise other
    if failed:
        raise StartupError("; ".join(str(o) for o in failed)) from failed[0]
    await postgres.migrate(settings.database_url)


@click.group(cls=_Mcode)
@click.option("-v", "--verbose", is_flag=True, help="Log at DEBUG level (as MCODE_LOG_LEVEL=debug does).")
def main(verbose: bool) -> None:
    """Marketing Code service.

    What stops a command at start (a bad setting, PostgreSQL or Redis not answering after
    MCODE_START_WAIT_S, default 10 s, of retries) is one line on stderr; MCODE_LOG_LEVEL=debug
    shows its traceback."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else _log_level(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
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
    """Serve the HTTP API and redirects (with the click writer, unless MCODE_EMBEDDED_WRITER=0).

    Without MCODE_PUBLIC_URL, short links use the address served here (127.0.0.1 for 0.0.0.0)."""
    import uvicorn

    settings = _settings()
    if "public_url" not in settings.model_fields_set:
        url = _local_url(host, port)
        if url != settings.public_url:
            os.environ["MCODE_PUBLIC_URL"] = url  # the workers read it when they start
            log.warning("MCODE_PUBLIC_URL is not set: short links say %s (set it to the address buyers reach)", url)
    asyncio.run(_dependencies_answer(settings))
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
        log_level=logging.getLevelName(logging.getLogger().getEffectiveLevel()).lower(),
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
    asyncio.run(_dependencies_answer(settings))
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
@click.argument("file", type=click.File("rb"))
@click.option("--print-only", is_flag=True,
              help="Print the Mcode-Signature header and the body instead of posting them.")
@click.option("--timestamp", type=int, default=None,
              help="Sign at this unix time (default now), e.g. to compare with an order system's own signature.")
@click.option("--timeout", type=float, default=10, show_default=True, help="Seconds to wait for the answer.")
def event(file: BinaryIO, print_only: bool, timestamp: int | None, timeout: float) -> None:
    """Sign an order event (FILE's bytes exactly, or stdin for -) with the first MCODE_EVENT_SECRETS
    and POST it to MCODE_PUBLIC_URL/v1/events; print the answer's status (stderr) and JSON (stdout).
    Exit status 1 unless the answer is 2xx."""
    import json
    import time
    import urllib.error
    import urllib.request

    from service.auth import sign

    settings = _settings()
    if not settings.event_secrets:
        raise StartupError("MCODE_EVENT_SECRETS is empty: there is nothing to sign with")
    body: bytes = file.read()
    t = str(int(time.time()) if timestamp is None else timestamp)
    signature = f"t={t},v1={sign(settings.event_secrets[0], t, body)}"
    if print_only:
        click.echo(f"Mcode-Signature: {signature}\n")
        sys.stdout.flush()
        sys.stdout.buffer.write(body)
        return

    url = settings.public_url.rstrip("/") + "/v1/events"
    if not url.startswith(("http://", "https://")):
        raise StartupError(f"MCODE_PUBLIC_URL must start with http:// or https://, not {settings.public_url!r}")
    request = urllib.request.Request(url, data=body, method="POST", headers={  # noqa: S310 - scheme checked above
        "Content-Type": "application/json", "Mcode-Signature": signature, "User-Agent": "mcode-event"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - scheme checked above
            status, reason, answer = response.status, response.reason, response.read()
    except urllib.error.HTTPError as exc:
        status, reason, answer = exc.code, exc.reason, exc.read()
    except (urllib.error.URLError, OSError) as exc:
        cause = exc.reason if isinstance(exc, urllib.error.URLError) and isinstance(exc.reason, BaseException) else exc
        raise click.ClickException(
            f"could not post to {url}: {why(cause)} (is the service running there? MCODE_PUBLIC_URL names it)"
        ) from None
    click.echo(f"{status} {reason}", err=True)
    try:
        click.echo(json.dumps(json.loads(answer), indent=2, ensure_ascii=False))
    except ValueError:
        click.echo(answer.decode("utf-8", "replace"))
    if not 200 <= status < 300:
        sys.exit(1)


def _dev_command() -> str:
    """How a shell runs `mcode` in this checkout: scripts/dev.sh (the environment of `scripts/dev.sh
    run`), by its absolute path, so that the lines work from any directory; else the `mcode` on the
    PATH (an installed package)."""
    return f"{shlex.quote(str(DEV_SCRIPT))} mcode" if DEV_SCRIPT.is_file() else "mcode"


def demo_steps(public_url: str, code_url: str, key: str, mcode: str) -> str:
    """Shell lines that click `code_url` as a browser, post an order and its payment, and read the
    report; each works when pasted, in order (tests/test_demo.py runs them)."""
    base = public_url.rstrip("/")
    event = f"MCODE_PUBLIC_URL={shlex.quote(base)} {mcode} event - <<EOF"
    now = "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    report = shlex.quote(f"{base}/v1/reports/traffic?group_by=channel")
    return "\n".join([
        "# 1. A buyer clicks the first link. curl's own User-Agent is a bot's (redirected, but it never",
        "#    earns), so send a browser's. The redirect's Location carries the click id as mc_click.",
        f"CLICK=$(curl -s -o /dev/null -w '%{{redirect_url}}' -A '{DEMO_USER_AGENT}' {shlex.quote(code_url)}"
        " | sed -n 's/.*[?&]mc_click=\\([0-9a-f]*\\).*/\\1/p')",
        'echo "mc_click=$CLICK"',
        "",
        "# 2. The order system posts the order with that click id, signed with the first MCODE_EVENT_SECRETS",
        '#    by `mcode event`: the answer says "status": "attributed", commission "pending".',
        "ORDER=demo-$(date +%s)",
        event,
        f'{{"event_id": "$ORDER", "type": "order", "occurred_at": "{now}", "order_id": "$ORDER", '
        '"click_id": "$CLICK", "amount": "19.99", "currency": "USD", "category": "toys"}',
        "EOF",
        "",
        '# 3. The buyer pays: the commission (19.99 x 0.08 = 1.60 USD) becomes "payable".',
        event,
        f'{{"event_id": "$ORDER-paid", "type": "payment", "occurred_at": "{now}", "order_id": "$ORDER"}}',
        "EOF",
        "",
        "# 4. The seller's report (with its key): the instagram row counts the order, paid, and its",
        '#    commission {"USD": "1.60"} (one order more each time these steps run).',
        f"curl -s -H 'Authorization: Bearer {key}' {report} | python3 -m json.tool",
        "",
        f"# 5. The same in a browser: open {base}/console and sign in with the seller key above.",
    ])


@main.command()
def demo() -> None:
    """Create a demo seller, product, rate and codes, and print shell lines that click one, post an
    order and its payment, and read the report."""
    import urllib.request
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
    click.echo("seller demo-seller, product demo-product (category toys, rate 0.08); its codes (ig, tt, newsletter):")
    for url in urls:
        click.echo(f"  {url}")
    click.echo(f"seller key (shown once): {key}")
    base = settings.public_url.rstrip("/")
    try:
        urllib.request.urlopen(f"{base}/healthz", timeout=2).close()  # noqa: S310 - our own public URL
    except (OSError, ValueError):
        click.echo(f"mcode: nothing answers at {base} yet: start the service (scripts/dev.sh run) "
                   "before the steps below", err=True)
    click.echo(f"\nTry it: paste these lines into a shell, in order, while the service answers at {base}.\n")
    click.echo(demo_steps(base, urls[0], key, _dev_command()))


if __name__ == "__main__":
    main()
