"""OpenTelemetry instrumentation that prices every OpenAI image call, per user and tenant."""

from .attribution import billing_context
from .doctor import doctor
from .instrumentor import OpenAIImageCostInstrumentor
from .price_check import check_prices
from .quote import quote
from .reprice import reprice
from .version import __version__

__all__ = [
    "OpenAIImageCostInstrumentor",
    "__version__",
    "billing_context",
    "check_prices",
    "doctor",
    "quote",
    "reprice",
]
