"""openai-agents and pydantic-ai in Responses WebSocket mode, against the bundled server.

openai-agents opens its own `websockets` connection; pydantic-ai goes through the SDK's
`responses.connect()`. Both are priced like the SDK's own WebSocket calls (the hand-computed
costs are in test_websocket_mode). The packages are test extras of the openai 3.x line only
(`clients` extra): elsewhere these tests skip.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest
from test_websocket_mode import (
    ONE_IMAGE,
    ONE_IMAGE_MAINLINE,
    TOOL,
    TWO_IMAGES,
    TWO_IMAGES_MAINLINE,
    call_spans,
)

from otel_image_cost import billing_context

from conftest import Telemetry

COST = "openai.image.cost"
SETTINGS = {key: value for key, value in TOOL.items() if key != "type"}


def sent_over_websocket(server: Any) -> bool:
    """Every request reached the server as a WebSocket create (none fell back to HTTP)."""
    methods = {request.method for request in server.requests}
    return methods == {"GET", "WEBSOCKET"}


def check_runs(telemetry: Telemetry) -> dict[str, Any]:
    """One image for alice, then two for bob, on one connection; returns the call spans by user."""
    spans = {span.attributes["user.id"]: span for span in call_spans(telemetry)}
    assert spans["alice"].attributes["gen_ai.usage.cost"] == ONE_IMAGE + ONE_IMAGE_MAINLINE
    assert spans["bob"].attributes["gen_ai.usage.cost"] == TWO_IMAGES + TWO_IMAGES_MAINLINE
    assert telemetry.total(COST, user__id="alice") == ONE_IMAGE + ONE_IMAGE_MAINLINE
    assert telemetry.total(COST, user__id="bob") == TWO_IMAGES + TWO_IMAGES_MAINLINE
    assert telemetry.total("openai.image.generated") == 3
    assert telemetry.total("openai.image.partial_images") == 3
    records = {r.attributes["user.id"]: r.attributes for r in telemetry.records()}
    assert sorted(records) == sorted(spans)  # one billing record per call
    assert {r["openai.image.outcome"] for r in records.values()} == {"ok"}
    assert records["bob"]["gen_ai.usage.cost"] == TWO_IMAGES + TWO_IMAGES_MAINLINE
    return spans


def check_cut(telemetry: Telemetry) -> None:
    """Cut after the image item: estimated (272 + 100) x 40e-6 + 8 x 5e-6 = 0.01492 (rule 12)."""
    (span,) = call_spans(telemetry)
    assert span.attributes is not None and span.attributes["openai.image.cost.source"] == "estimate"
    assert telemetry.total(COST, user__id="dave", openai__image__cost__part="image") == 0.01492
    record = telemetry.record()
    assert (record["openai.image.outcome"], record["gen_ai.usage.cost"]) == ("abandoned", 0.01492)


# -- openai-agents ----------------------------------------------------------------------------------


@pytest.fixture
def agents_sdk(server: Any) -> Any:
    """openai-agents set to WebSocket mode with a client of the local server (restored after)."""
    agents = pytest.importorskip("agents", reason="openai-agents is installed on the openai 3.x line only")
    agents.set_tracing_disabled(True)
    agents.set_default_openai_client(
        openai.AsyncOpenAI(base_url=server.base_url, api_key="sk-test", max_retries=0), use_for_tracing=False
    )
    agents.set_default_openai_responses_transport("websocket")
    yield agents
    agents.set_default_openai_responses_transport("http")


def agent(agents: Any, *, tool: bool = True) -> Any:
    tools = [agents.ImageGenerationTool(tool_config=TOOL)] if tool else []
    return agents.Agent(name="artist", model="gpt-5", tools=tools)


async def test_openai_agents(
    telemetry: Telemetry, instrumented: object, agents_sdk: Any, server: Any
) -> None:
    with billing_context(user_id="alice"):
        first = await agents_sdk.Runner.run(agent(agents_sdk), "a cat")
    with billing_context(user_id="bob"):
        await agents_sdk.Runner.run(agent(agents_sdk), "two images of a cat")
    with billing_context(user_id="carol"):
        await agents_sdk.Runner.run(agent(agents_sdk, tool=False), "hello")
    assert first.final_output == "Here is the image you asked for."
    assert sent_over_websocket(server)
    assert sorted(check_runs(telemetry)) == ["alice", "bob"]  # carol's request had no image tool


async def test_openai_agents_connection_cut(
    telemetry: Telemetry, instrumented: object, agents_sdk: Any, server: Any
) -> None:
    server.inject("cut_stream", path_prefix="/responses")
    with billing_context(user_id="dave"), pytest.raises(Exception) as raised:
        await agents_sdk.Runner.run(agent(agents_sdk), "a cat")
    assert "websocket" in type(raised.value).__module__ + str(raised.value).lower()
    check_cut(telemetry)


# -- pydantic-ai ----------------------------------------------------------------------------------


@pytest.fixture
async def pydantic_agent(server: Any) -> AsyncIterator[Any]:
    """A pydantic-ai agent on the Responses model in WebSocket mode, its socket kept open."""
    pytest.importorskip("pydantic_ai", reason="pydantic-ai is installed on the openai 3.x line only")
    from pydantic_ai import Agent
    from pydantic_ai.capabilities import NativeTool
    from pydantic_ai.models.openai import OpenAIResponsesModel, OpenAIResponsesModelSettings
    from pydantic_ai.native_tools import ImageGenerationTool
    from pydantic_ai.providers.openai import OpenAIProvider

    sdk = openai.AsyncOpenAI(base_url=server.base_url, api_key="sk-test", max_retries=0)
    model = OpenAIResponsesModel("gpt-5", provider=OpenAIProvider(openai_client=sdk))
    tool = ImageGenerationTool(provider_settings={"openai": SETTINGS})  # type: ignore[typeddict-item]
    settings = OpenAIResponsesModelSettings(openai_transport="websocket")
    async with Agent(model, capabilities=[NativeTool(tool)], model_settings=settings) as agent:
        yield agent


async def test_pydantic_ai(
    telemetry: Telemetry, instrumented: object, pydantic_agent: Any, server: Any
) -> None:
    with billing_context(user_id="alice"):
        first = await pydantic_agent.run("a cat")
    with billing_context(user_id="bob"):
        await pydantic_agent.run("two images of a cat")
    with billing_context(user_id="carol"):
        await pydantic_agent.run("no image, just hello")  # the tool offered but not used: a call, no image
    assert first.output == "Here is the image you asked for."
    assert sent_over_websocket(server)
    assert len([r for r in server.requests if r.method == "GET"]) == 1  # one connection for all runs
    carol = check_runs(telemetry)["carol"]  # offered the tool, drew nothing: a call with no image
    assert carol.attributes["openai.image.count"] == 0
    # gpt-5 only: input 1500 + ceil(20/4) = 1505 x 1.25e-6 = 0.00188125, output ("Sure, no image
    # this time." 25 chars -> 7) + 64 = 71 x 10e-6 = 0.00071; 0.00259125
    assert telemetry.total(COST, user__id="carol", openai__image__cost__part="mainline") == 0.00259125
    assert telemetry.total(COST, user__id="carol", openai__image__cost__part="image") == 0


async def test_pydantic_ai_connection_cut(
    telemetry: Telemetry, instrumented: object, pydantic_agent: Any, server: Any
) -> None:
    server.inject("cut_stream", path_prefix="/responses")
    with billing_context(user_id="dave"), pytest.raises(Exception) as raised:
        await pydantic_agent.run("a cat")
    assert type(raised.value).__name__ == "ModelConnectionError"
    check_cut(telemetry)
