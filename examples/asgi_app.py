"""An ASGI app that sells images to its users (no framework): run it as users do,

    OTEL_METRICS_EXPORTER=none WORKER_METRICS_TARGETS_DIR=DIR PYTHONPATH=examples:deploy/multiworker \
    opentelemetry-instrument uvicorn --workers 4 asgi_app:app

uvicorn starts its workers with `spawn`, not fork: each runs `opentelemetry-instrument`'s set-up
itself, and has no post-fork hook, so the app sets up its worker's metrics in the lifespan
start-up (deploy/multiworker/worker_metrics.py) and withdraws them at shutdown.
`GET /generate?user=U&tenant=T&quality=Q` as in examples/wsgi_app.py, with the async client.
"""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs

import openai
import worker_metrics
from wsgi_app import PROMPT, QUALITIES

from otel_image_cost import billing_context

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
_client: openai.AsyncOpenAI | None = None


async def lifespan(receive: Receive, send: Send) -> None:
    global _client
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            worker_metrics.start()
            _client = openai.AsyncOpenAI(max_retries=0)
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            worker_metrics.stop()
            await send({"type": "lifespan.shutdown.complete"})
            return


async def reply(send: Send, status: int, body: bytes, content_type: str) -> None:
    headers = [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
        return
    query = {key: values[0] for key, values in parse_qs(scope.get("query_string", b"").decode()).items()}
    if scope["path"] != "/generate" or query.get("quality") not in QUALITIES or _client is None:
        await reply(send, 404, b"GET /generate?user=U&tenant=T&quality=low|medium|high\n", "text/plain")
        return
    with billing_context(user_id=query.get("user", ""), tenant_id=query.get("tenant", "")):
        await _client.images.generate(
            model="gpt-image-1", prompt=PROMPT, quality=query["quality"], size="1024x1024"
        )
    await reply(send, 200, json.dumps({"pid": os.getpid()}).encode(), "application/json")
