"""OpenTelemetry instrumentation that prices every OpenAI image call, per user and tenant."""

from .attribution import billing_context
from .instrumentor import OpenAIImageCostInstrumentor
from .price_check import check_prices
from .quote import quote
from .version import __version__

__all__ = ["OpenAIImageCostInstrumentor", "__version__", "billing_context", "check_prices", "quote"]
