"""The image-model price table: load the built-in prices.yaml, merge a user's override, look up models.

All price facts live in prices.yaml (never in code). Prices are converted once, at load time, to
`Decimal` USD per token (or per image), so pricing a call is plain dict lookups and multiplication.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import reprlib
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from functools import lru_cache
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, TypeVar

import yaml

__all__ = [
    "BILLED_AS_IMAGE_OUTPUT",
    "EstimateDefaults",
    "EstimateRule",
    "ImageModelPrices",
    "PerImageEstimate",
    "PerImageModelPrices",
    "PriceFileError",
    "PriceTable",
    "Provenance",
    "SizeFormulaEstimate",
    "TokenModelPrices",
    "TokenPrices",
    "TokenTableEstimate",
    "load_price_table",
]

BILLED_AS_IMAGE_OUTPUT: Final = "billed_as_image_output"
"""`output_text` value of a model with no text-output price: its text output is billed as image output."""

_STATUSES: Final = ("published", "inferred", "third_party_only")
_TOKEN_PRICE_KEYS: Final = (
    "input_text",
    "input_cached_text",
    "input_image",
    "input_cached_image",
    "output_image",
    "output_text",
)
_PROVENANCE_REQUIRED: Final = frozenset({"source", "as_of"})
_PROVENANCE_OPTIONAL: Final = frozenset({"status", "notes"})
_TOKENS_PER_MILLION_EXP: Final = -6
_SNAPSHOT_RE: Final = re.compile(r"(.+)-(\d{4}-\d{2}-\d{2})")
MAX_PRICE_FILE_BYTES: Final = 1 << 20  # a price file is a few KiB; anything past 1 MiB is refused unread
_MAX_PRICE: Final = 1_000_000  # USD per 1M tokens or per image; past it a price cannot be right
_MESSAGE_CHARS: Final = 200  # an error message shows at most this much of a value

_T = TypeVar("_T")


class PriceFileError(ValueError):
    """A price file is missing, unparsable or breaks the schema; the message names the file and problem."""


@dataclass(frozen=True, slots=True)
class Provenance:
    """Where a row's facts come from, so a number on a dashboard can be traced back to its source."""

    source: str
    as_of: date
    status: str  # "published", "inferred" or "third_party_only"
    notes: str | None


@dataclass(frozen=True, slots=True)
class TokenPrices:
    """USD per token; None where the price is unknown (a call needing it stays unpriced)."""

    input_text: Decimal | None
    input_cached_text: Decimal | None
    input_image: Decimal | None
    input_cached_image: Decimal | None
    output_image: Decimal | None
    output_text: Decimal | None
    text_output_as_image: bool  # the model has no text-output price: text output is image output


@dataclass(frozen=True, slots=True)
class TokenTableEstimate:
    """Output tokens of one image by quality and size (gpt-image-1 family)."""

    name: str
    provenance: Provenance
    output_tokens_per_image: Mapping[str, Mapping[str, int]]


@dataclass(frozen=True, slots=True)
class PerImageEstimate:
    """USD of one image by quality and size, for a token model whose token table does not fit (mini)."""

    name: str
    provenance: Provenance
    usd_per_image: Mapping[str, Mapping[str, Decimal]]


@dataclass(frozen=True, slots=True)
class SizeFormulaEstimate:
    """Per-quality factor of the gpt-image-2+ size formula (any WxH)."""

    name: str
    provenance: Provenance
    factors: Mapping[str, int]


EstimateRule = TokenTableEstimate | PerImageEstimate | SizeFormulaEstimate


@dataclass(frozen=True, slots=True)
class TokenModelPrices:
    """A token-billed image model; `estimate` is None when it cannot be priced without usage."""

    model: str
    provenance: Provenance
    tokens: TokenPrices
    estimate: EstimateRule | None


@dataclass(frozen=True, slots=True)
class PerImageModelPrices:
    """A model billed per image by quality and size (DALL-E)."""

    model: str
    provenance: Provenance
    default_quality: str
    default_size: str
    usd_per_image: Mapping[str, Mapping[str, Decimal]]


ImageModelPrices = TokenModelPrices | PerImageModelPrices


@dataclass(frozen=True, slots=True)
class EstimateDefaults:
    """How an estimate fills in what a response did not report (cost-model.md rule 2)."""

    provenance: Provenance
    quality: str
    size: str
    partial_image_output_tokens: int
    prompt_chars_per_token: int


@dataclass(frozen=True, slots=True)
class PriceTable:
    """The merged price table; `version` names it on every priced span."""

    version: str
    models: Mapping[str, ImageModelPrices]
    estimate_defaults: EstimateDefaults

    def lookup(self, model: str) -> ImageModelPrices | None:
        """Exact name, else the base model of a dated snapshot; never any fuzzier match."""
        row = self.models.get(model)
        if row is None and (base := _snapshot_base(model)) is not None:
            row = self.models.get(base)
        return row


@lru_cache(maxsize=1024)
def _snapshot_base(model: str) -> str | None:
    """`gpt-image-2-2026-04-21` -> `gpt-image-2`; None when the name carries no valid date suffix."""
    match = _SNAPSHOT_RE.fullmatch(model)
    if match is None:
        return None
    try:
        date.fromisoformat(match.group(2))
    except ValueError:
        return None
    return match.group(1)


def load_price_table(override_path: str | None = None) -> PriceTable:
    """The built-in table, with rows of `override_path` (YAML or JSON, same schema) replacing or adding.

    With an override, the version names the file and a hash of its bytes (the override's own optional
    `version` is not trusted for that: the hash changes whenever the prices do).
    """
    builtin = resources.files("otel_image_cost").joinpath("prices.yaml")
    base = _Document.parse(_Source(str(builtin)), yaml.safe_load(builtin.read_text(encoding="utf-8")), True)
    override = _read_override(override_path) if override_path is not None else None
    docs = [base] if override is None else [base, override]

    estimates: dict[str, EstimateRule] = {}
    for doc in docs:
        estimates.update(doc.estimates())
    models: dict[str, ImageModelPrices] = {}
    for doc in docs:
        models.update(doc.models(estimates))
    defaults = base.estimate_defaults()
    version = _require(base.version, base.src, "version", "missing key")
    if override is not None:
        defaults = override.estimate_defaults() or defaults
        version = f"{version}+override:{Path(override.src.path).name}:{override.sha256[:12]}"
    return PriceTable(
        version=version,
        models=MappingProxyType(models),
        estimate_defaults=_require(defaults, base.src, "estimate_defaults", "missing key"),
    )


def _read_override(path: str) -> _Document:
    src = _Source(path)
    data = _read_small_regular_file(src)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise src.error("", f"not UTF-8 text: {exc}") from exc
    try:
        raw = json.loads(text) if path.lower().endswith(".json") else yaml.safe_load(text)
    except json.JSONDecodeError as exc:
        raise src.error("", f"not valid JSON: {_capped(str(exc))}") from exc
    except yaml.YAMLError as exc:
        raise src.error("", f"not valid YAML: {_capped(str(exc))}") from exc
    except (ValueError, RecursionError, OverflowError) as exc:
        # a value the parser cannot build: an impossible date, a number past Python's digit
        # limit, nesting deeper than the interpreter's stack
        raise src.error("", f"unreadable value: {type(exc).__name__}: {_capped(str(exc))}") from exc
    return _Document.parse(src, raw, False, sha256=hashlib.sha256(data).hexdigest())


def _read_small_regular_file(src: _Source) -> bytes:
    """The bytes of a regular file of at most 1 MiB. Checked before opening (a FIFO would block
    the open itself), and again on the open descriptor (the path may have changed meanwhile)."""
    try:
        if not stat.S_ISREG(os.stat(src.path).st_mode):
            raise src.error("", "not a regular file")
        descriptor = os.open(src.path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        with os.fdopen(descriptor, "rb") as file:
            status = os.fstat(file.fileno())
            if not stat.S_ISREG(status.st_mode):
                raise src.error("", "not a regular file")
            if status.st_size > MAX_PRICE_FILE_BYTES:
                raise src.error("", f"larger than {MAX_PRICE_FILE_BYTES} bytes ({status.st_size})")
            data = file.read(MAX_PRICE_FILE_BYTES + 1)
    except OSError as exc:
        raise src.error("", f"cannot read price file: {exc.strerror or exc}") from exc
    if len(data) > MAX_PRICE_FILE_BYTES:
        raise src.error("", f"larger than {MAX_PRICE_FILE_BYTES} bytes")
    return data


_SHORT_REPR = reprlib.Repr()
_SHORT_REPR.maxstring = _SHORT_REPR.maxother = _MESSAGE_CHARS
_SHORT_REPR.maxlong = 40


def _shown(value: object) -> str:
    """A value as an error message shows it: a bounded repr, never the whole of a huge value."""
    try:
        return _capped(_SHORT_REPR.repr(value))
    except Exception:
        return f"<{type(value).__name__}>"


def _capped(text: str) -> str:
    return text if len(text) <= _MESSAGE_CHARS else text[:_MESSAGE_CHARS] + "..."


def _require(value: _T | None, src: _Source, where: str, problem: str) -> _T:
    if value is None:
        raise src.error(where, problem)
    return value


@dataclass(frozen=True, slots=True)
class _Source:
    """The file being read, so every error names it and the exact place in it."""

    path: str

    def error(self, where: str, problem: str) -> PriceFileError:
        where = _capped(where)
        return PriceFileError(f"{self.path}: {where}: {problem}" if where else f"{self.path}: {problem}")

    def mapping(self, where: str, value: object) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.error(where, f"must be a mapping, got {_type_name(value)}")
        for key in value:
            if not isinstance(key, str):
                raise self.error(where, f"keys must be strings, got {_type_name(key)} {_shown(key)}")
        return value

    def keys(
        self, where: str, value: object, required: frozenset[str], optional: frozenset[str]
    ) -> dict[str, Any]:
        row = self.mapping(where, value)
        allowed = required | optional
        for key in row:
            if key not in allowed:
                raise self.error(where, f"unknown key {_shown(key)} (allowed: {', '.join(sorted(allowed))})")
        missing = sorted(required - row.keys())
        if missing:
            raise self.error(where, f"missing key {', '.join(map(repr, missing))}")
        return row

    def string(self, where: str, value: object) -> str:
        if not isinstance(value, str) or not value:
            raise self.error(where, f"must be a non-empty string, got {_type_name(value)} {_shown(value)}")
        return value

    def count(self, where: str, value: object, minimum: int) -> int:
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            got = f"{_type_name(value)} {_shown(value)}"
            raise self.error(where, f"must be an integer >= {minimum}, got {got}")
        return value

    def price(self, where: str, value: object) -> Decimal:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error(where, f"must be a number, got {_type_name(value)} {_shown(value)}")
        if not 0 <= value <= _MAX_PRICE:  # NaN fails too; an int is never turned into a float here
            raise self.error(where, f"must be a number from 0 to {_MAX_PRICE}, got {_shown(value)}")
        return Decimal(repr(value)) if isinstance(value, float) else Decimal(value)

    def grid(
        self, where: str, value: object, cell: Callable[[str, object], _T]
    ) -> Mapping[str, Mapping[str, _T]]:
        """A quality -> size -> value table."""
        return MappingProxyType(
            {
                quality: MappingProxyType(
                    {
                        size: cell(f"{where}.{quality}.{size}", item)
                        for size, item in self.mapping(f"{where}.{quality}", sizes).items()
                    }
                )
                for quality, sizes in self.mapping(where, value).items()
            }
        )

    def provenance(self, where: str, row: Mapping[str, Any]) -> Provenance:
        as_of = row["as_of"]
        if not isinstance(as_of, date):
            try:
                as_of = date.fromisoformat(self.string(f"{where}.as_of", as_of))
            except ValueError as exc:
                raise self.error(f"{where}.as_of", f"must be a date YYYY-MM-DD, got {_shown(as_of)}") from exc
        status = row.get("status", "published")
        if status not in _STATUSES:
            allowed = ", ".join(_STATUSES)
            raise self.error(f"{where}.status", f"must be one of {allowed}, got {_shown(status)}")
        notes = row.get("notes")
        return Provenance(
            source=self.string(f"{where}.source", row["source"]),
            as_of=as_of,
            status=status,
            notes=None if notes is None else self.string(f"{where}.notes", notes),
        )


@dataclass(frozen=True, slots=True)
class _Document:
    """One price file, checked at the top level; its sections are parsed on demand."""

    src: _Source
    version: str | None
    raw: Mapping[str, Any]
    sha256: str

    @classmethod
    def parse(cls, src: _Source, raw: object, is_builtin: bool, sha256: str = "") -> _Document:
        sections = frozenset({"version", "models", "estimates", "estimate_defaults"})
        top = src.keys("", raw, sections if is_builtin else frozenset(), sections)
        version = top.get("version")
        return cls(src, None if version is None else src.string("version", version), top, sha256)

    def section(self, name: str) -> dict[str, Any]:
        return self.src.mapping(name, self.raw.get(name, {}))

    def estimate_defaults(self) -> EstimateDefaults | None:
        if "estimate_defaults" not in self.raw:
            return None
        where = "estimate_defaults"
        fields = frozenset({"quality", "size", "partial_image_output_tokens", "prompt_chars_per_token"})
        row = self.src.keys(where, self.raw[where], fields | _PROVENANCE_REQUIRED, _PROVENANCE_OPTIONAL)
        return EstimateDefaults(
            provenance=self.src.provenance(where, row),
            quality=self.src.string(f"{where}.quality", row["quality"]),
            size=self.src.string(f"{where}.size", row["size"]),
            partial_image_output_tokens=self.src.count(
                f"{where}.partial_image_output_tokens", row["partial_image_output_tokens"], 0
            ),
            prompt_chars_per_token=self.src.count(
                f"{where}.prompt_chars_per_token", row["prompt_chars_per_token"], 1
            ),
        )

    def estimates(self) -> dict[str, EstimateRule]:
        return {
            name: self._estimate(f"estimates.{name}", name, row)
            for name, row in self.section("estimates").items()
        }

    def _estimate(self, where: str, name: str, value: object) -> EstimateRule:
        src = self.src
        kind = src.mapping(where, value).get("kind")
        if kind == "token_table":
            row = src.keys(
                where,
                value,
                frozenset({"kind", "output_tokens_per_image"}) | _PROVENANCE_REQUIRED,
                _PROVENANCE_OPTIONAL,
            )
            grid = src.grid(
                f"{where}.output_tokens_per_image",
                row["output_tokens_per_image"],
                lambda at, v: src.count(at, v, 0),
            )
            return TokenTableEstimate(name, src.provenance(where, row), grid)
        if kind == "per_image_usd":
            row = src.keys(
                where,
                value,
                frozenset({"kind", "usd_per_image"}) | _PROVENANCE_REQUIRED,
                _PROVENANCE_OPTIONAL,
            )
            return PerImageEstimate(
                name,
                src.provenance(where, row),
                src.grid(f"{where}.usd_per_image", row["usd_per_image"], src.price),
            )
        if kind == "size_formula":
            row = src.keys(
                where, value, frozenset({"kind", "factors"}) | _PROVENANCE_REQUIRED, _PROVENANCE_OPTIONAL
            )
            factors = {
                q: src.count(f"{where}.factors.{q}", f, 1)
                for q, f in src.mapping(f"{where}.factors", row["factors"]).items()
            }
            return SizeFormulaEstimate(name, src.provenance(where, row), MappingProxyType(factors))
        kinds = "token_table, per_image_usd or size_formula"
        raise src.error(f"{where}.kind", f"must be {kinds}, got {_shown(kind)}")

    def models(self, estimates: Mapping[str, EstimateRule]) -> dict[str, ImageModelPrices]:
        return {
            name: self._model(f"models.{name}", name, row, estimates)
            for name, row in self.section("models").items()
        }

    def _model(
        self, where: str, name: str, value: object, estimates: Mapping[str, EstimateRule]
    ) -> ImageModelPrices:
        src = self.src
        if "usd_per_image" in src.mapping(where, value):
            row = src.keys(
                where,
                value,
                frozenset({"usd_per_image", "default_quality", "default_size"}) | _PROVENANCE_REQUIRED,
                _PROVENANCE_OPTIONAL,
            )
            return PerImageModelPrices(
                model=name,
                provenance=src.provenance(where, row),
                default_quality=src.string(f"{where}.default_quality", row["default_quality"]),
                default_size=src.string(f"{where}.default_size", row["default_size"]),
                usd_per_image=src.grid(f"{where}.usd_per_image", row["usd_per_image"], src.price),
            )
        row = src.keys(
            where,
            value,
            frozenset({"usd_per_1m_tokens"}) | _PROVENANCE_REQUIRED,
            frozenset({"estimate"}) | _PROVENANCE_OPTIONAL,
        )
        estimate_name = row.get("estimate")
        estimate = None
        if estimate_name is not None:
            estimate = estimates.get(src.string(f"{where}.estimate", estimate_name))
            if estimate is None:
                raise src.error(
                    f"{where}.estimate",
                    f"no estimate rule named {_shown(estimate_name)} "
                    f"(known: {_capped(', '.join(sorted(estimates)))})",
                )
        return TokenModelPrices(
            name,
            src.provenance(where, row),
            self._token_prices(f"{where}.usd_per_1m_tokens", row["usd_per_1m_tokens"]),
            estimate,
        )

    def _token_prices(self, where: str, value: object) -> TokenPrices:
        row = self.src.keys(where, value, frozenset(_TOKEN_PRICE_KEYS), frozenset())
        text_output_as_image = row["output_text"] == BILLED_AS_IMAGE_OUTPUT

        def per_token(key: str) -> Decimal | None:
            raw = row[key]
            if raw is None or (key == "output_text" and text_output_as_image):
                return None
            return self.src.price(f"{where}.{key}", raw).scaleb(_TOKENS_PER_MILLION_EXP)

        return TokenPrices(
            input_text=per_token("input_text"),
            input_cached_text=per_token("input_cached_text"),
            input_image=per_token("input_image"),
            input_cached_image=per_token("input_cached_image"),
            output_image=per_token("output_image"),
            output_text=per_token("output_text"),
            text_output_as_image=text_output_as_image,
        )


def _type_name(value: object) -> str:
    return "null" if value is None else type(value).__name__
