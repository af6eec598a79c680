"""A WSGI app that sells images to its users (standard library only): run it as users do,

    OTEL_METRICS_EXPORTER=none WORKER_METRICS_TARGETS_DIR=DIR PYTHONPATH=examples \
    opentelemetry-instrument gunicorn -c deploy/multiworker/gunicorn.conf.py wsgi_app:app

`GET /generate?user=U&tenant=T&quality=Q` makes one gpt-image-1 1024x1024 image call with the
prompt PROMPT for that user and tenant (`billing_context`) and answers which worker served it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

import openai

from otel_image_cost import billing_context

PROMPT = "A fox"  # 5 characters: 2 input text tokens
QUALITIES = ("low", "medium", "high")
_client: openai.OpenAI | None = None


def generate(user: str, tenant: str, quality: str) -> None:
    global _client
    if _client is None:  # one client per worker process, made after the fork
        _client = openai.OpenAI(max_retries=0)
    with billing_context(user_id=user, tenant_id=tenant):
        _client.images.generate(model="gpt-image-1", prompt=PROMPT, quality=quality, size="1024x1024")


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    query = {key: values[0] for key, values in parse_qs(environ.get("QUERY_STRING", "")).items()}
    if environ.get("PATH_INFO") != "/generate" or query.get("quality") not in QUALITIES:
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"GET /generate?user=U&tenant=T&quality=low|medium|high\n"]
    generate(query.get("user", ""), query.get("tenant", ""), query["quality"])
    body = json.dumps({"pid": os.getpid()}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
