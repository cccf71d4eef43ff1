"""The gateway app: settings in, clients created in the lifespan, routers included.

Rules:
- Secrets are read when the app is created (`Secrets.values`): a secret missing in production, or
  a weak one, stops the gateway at start-up, not at the first request.
- Every client is made once, in the lifespan, and shared through `deps.Services`: one Redis client
  on a bounded pool (`redis_client`: `redis_pool_size` connections, each waited for up to
  `redis_pool_wait_s`, socket timeouts `redis_timeout_s`), the pub/sub `Relay`, Celery, the listen
  `Links`, the rate-limit `Buckets` and the collectors' `Quota`. When the app stops, the relay is
  stopped and the Redis client and Celery's broker connections closed.
- The API schema and its console (`/openapi.json`, `/docs`) exist only with `api_docs`
  (`METABGM_API_DOCS=true`): they are not for players. ReDoc is never served.
- A request FastAPI's own validation refuses is a 422 whose detail says what was wrong
  (`describe_errors`), counted as `rejected` ("validation").
- Redis or the broker unreachable (`RedisError`, kombu's `OperationalError`) is a 503 with
  `Retry-After: 5`, counted as `errors` ("gateway", "broker"): the client is told to keep its data
  and retry. On the mod's paths (`mod.is_mod_path`) it comes in the mod's own shape,
  `{"state": 0, "data": ...}`; elsewhere as `{"detail": ...}`.
- `EdgeGuards` (guards.py, with `allowed_hosts`) is added last, so it wraps every route, the
  static files under `/static` and the sockets.
"""

from __future__ import annotations

from contextlib import asynccontextmanager

import redis.asyncio as aioredis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from kombu.exceptions import OperationalError
from redis.exceptions import RedisError

from metabgm_shared import metrics
from metabgm_shared.queues import make_celery
from metabgm_shared.quota import Quota
from metabgm_shared.settings import Gateway, Secrets

from . import apidoc
from .body import describe_errors
from .deps import Links, Services
from .guards import EdgeGuards
from .ratelimit import Buckets
from .relay import Relay
from .routes import collect, listen, mod, operator, ops


def redis_client(settings: Gateway) -> aioredis.Redis:
    """A bounded pool: a burst of requests and sockets waits up to `redis_pool_wait_s` for one of
    `redis_pool_size` connections instead of failing with "Too many connections"."""
    timeout = settings.redis_timeout_s
    pool = aioredis.BlockingConnectionPool.from_url(
        settings.redis_url, max_connections=settings.redis_pool_size, timeout=settings.redis_pool_wait_s,
        socket_timeout=timeout, socket_connect_timeout=timeout,
    )  # fmt: skip
    return aioredis.Redis.from_pool(pool)  # the client owns the pool: aclose() closes its connections


def create_app(settings: Gateway, secrets: Secrets | None = None) -> FastAPI:
    secrets = secrets or Secrets(settings.data_dir, settings.environment)
    secrets.values  # noqa: B018 - fail at start-up, not at the first request

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        timeout = settings.redis_timeout_s
        client = redis_client(settings)
        relay = Relay(client)
        await relay.start()
        celery = make_celery(settings.redis_url, timeout_s=timeout)
        app.state.services = Services(
            settings=settings,
            secrets=secrets,
            redis=client,
            relay=relay,
            celery=celery,
            links=Links.from_secret(secrets.link_secret, settings.link_ttl_s),
            buckets=Buckets(settings.collector_rate_per_s, settings.collector_burst),
            quota=Quota(settings.collector_windows_per_min, settings.collector_new_players_per_min),
        )
        yield
        await relay.stop()
        await client.aclose()
        celery.close()  # the broker connections of its producer pool

    docs = settings.api_docs  # off by default: the schema and its console are not for players
    app = FastAPI(
        title="MetaBGM gateway",
        lifespan=lifespan,
        docs_url="/docs" if docs else None,
        redoc_url=None,
        openapi_url="/openapi.json" if docs else None,
    )

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        metrics.rejected.labels("validation").inc()
        return JSONResponse({"detail": describe_errors(exc.errors())}, status_code=422)

    @app.exception_handler(RedisError)
    @app.exception_handler(OperationalError)
    async def broker_down(request: Request, exc: Exception) -> JSONResponse:
        # Nothing was accepted: the client keeps its data and retries.
        metrics.errors.labels("gateway", "broker").inc()
        message = "pipeline unavailable (broker unreachable): retry shortly"
        body = {"state": 0, "data": message} if mod.is_mod_path(request.url.path) else {"detail": message}
        return JSONResponse(body, status_code=503, headers={"Retry-After": "5"})

    for router in (ops.router, collect.router, mod.router, listen.router, operator.router):
        app.include_router(router)
    app.mount("/static", StaticFiles(directory=listen.STATIC), name="static")
    apidoc.install(app)
    app.add_middleware(EdgeGuards, allowed_hosts=settings.allowed_hosts)
    return app
