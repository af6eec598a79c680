"""An app that asks the budget webhook before it spends, instrumented with no code change.

    opentelemetry-instrument python examples/spend_app.py --webhook URL \
        --calls alice:acme:2 --calls bob:acme:1 --wait-refusal alice:acme

Run under `opentelemetry-instrument` with the Prometheus exporter (examples/alerting_demo.py does
it). For every planned call it first asks the webhook whether the user (of the tenant) is over
budget (`GET /over-budget?user=X&tenant=T`) and spends only if not; each call is one
gpt-image-1 high 1024x1024 image with PROMPT, attributed with `billing_context`. Then, with
`--wait-refusal`, it keeps asking about that user until the webhook says no (the alert has come
round) and tries once more. One JSON line on stdout per event (`call`, `refused`, `done`); after
`done` it keeps serving /metrics until its standard input closes.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import openai
from budget_webhook import over_budget

from otel_image_cost import billing_context

MODEL, QUALITY, SIZE = "gpt-image-1", "high", "1024x1024"
PROMPT = "A lighthouse at dawn"  # 20 characters: 5 input text tokens


def emit(event: str, **fields: object) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


def spend_if_allowed(client: openai.OpenAI, webhook: str, user: str, tenant: str) -> bool:
    """Ask first; make the call only if the user is not over budget. True if it spent."""
    answer = over_budget(webhook, user, tenant)
    if answer["over_budget"]:
        emit("refused", user=user, tenant=tenant, at=time.time(), alerts=answer["alerts"])
        return False
    with billing_context(user_id=user, tenant_id=tenant):
        client.images.generate(model=MODEL, prompt=PROMPT, quality=QUALITY, size=SIZE)
    emit("call", user=user, tenant=tenant, ended_at=time.time())
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--webhook", required=True, help="base URL of examples/budget_webhook.py")
    parser.add_argument("--calls", action="append", default=[], help="USER:TENANT:COUNT, in order")
    parser.add_argument("--wait-refusal", help="USER:TENANT to ask about until refused")
    parser.add_argument("--timeout", type=float, default=60.0, help="give up waiting after this long")
    options = parser.parse_args()
    client = openai.OpenAI(max_retries=0)
    for plan in options.calls:
        user, tenant, count = plan.split(":")
        for _ in range(int(count)):
            if not spend_if_allowed(client, options.webhook, user, tenant):
                break
    if options.wait_refusal:
        user, tenant = options.wait_refusal.split(":")
        deadline = time.monotonic() + options.timeout
        while not over_budget(options.webhook, user, tenant)["over_budget"]:
            if time.monotonic() > deadline:
                emit("timeout", user=user, tenant=tenant)
                return 1
            time.sleep(0.05)
        spend_if_allowed(client, options.webhook, user, tenant)
    emit("done")
    sys.stdin.read()  # serve /metrics until told to stop
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
