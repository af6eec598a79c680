"""`otel-image-cost` (and `python -m otel_image_cost`): argument parsing and printing only.

Each verb is a function of its own module (`quote`, `price_check`, `doctor`, `reprice`); bad input
is one line on stderr naming the problem, exit 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from decimal import Decimal
from typing import NoReturn, TextIO

from .config import ENV_PRICES
from .doctor import doctor
from .errors import InputError
from .price_check import check_prices, price_rows
from .prices import PerImageModelPrices, PriceFileError, PriceTable, TokenModelPrices, load_price_table
from .quote import quote
from .reprice import UserTotals, reprice

__all__ = ["main"]

_PROG = "otel-image-cost"
EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and still exit 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message}\n")


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Run one verb; the exit status: 0 ok, 1 a check failed, 2 bad input."""
    args = _parser().parse_args(argv)
    stream = out or sys.stdout
    try:
        status: int = args.run(args, stream)
    except (InputError, PriceFileError) as exc:
        one_line = " ".join(str(exc).split())  # a YAML parser's message spans lines
        print(f"{_PROG} {args.verb}: error: {one_line}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except BrokenPipeError:  # `otel-image-cost prices | head`: the reader left, nothing to report
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED
    return status


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=_PROG, description="Ask otel-image-cost what a call costs, what it prices, and why."
    )
    verbs = parser.add_subparsers(dest="verb", required=True, parser_class=_Parser)
    prices_help = f"a price file merged over the built-in table (default: ${ENV_PRICES})"

    q = verbs.add_parser("quote", help="the cost of a planned image call, before making it")
    q.add_argument("model")
    q.add_argument("--quality", help="low, medium, high, ... or auto (priced as the estimate's default)")
    q.add_argument("--size", help="WIDTHxHEIGHT or auto")
    q.add_argument("-n", type=int, default=1, help="images (default 1)")
    q.add_argument("--partial-images", type=int, default=0, help="streamed partial previews per call")
    prompt = q.add_mutually_exclusive_group()
    prompt.add_argument("--prompt", help="the prompt text")
    prompt.add_argument("--prompt-chars", type=int, help="the prompt's length in characters")
    q.add_argument("--output-format", help="png, jpeg, webp (gif and svg cannot be known before the call)")
    q.add_argument("--prices", default=os.environ.get(ENV_PRICES), help=prices_help)
    q.add_argument("--json", action="store_true", help="print JSON (USD as exact decimal strings)")
    q.set_defaults(run=_run_quote)

    p = verbs.add_parser("prices", help="the price table; --check compares it with the SDK and genai-prices")
    p.add_argument("--check", action="store_true", help="exit 1 if a model would be unpriced or disagrees")
    p.add_argument("--prices", default=os.environ.get(ENV_PRICES), help=prices_help)
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=_run_prices)

    d = verbs.add_parser("doctor", help="why no telemetry appears: one line per check, exit 1 on a failure")
    d.add_argument("--json", action="store_true")
    d.set_defaults(run=_run_doctor)

    r = verbs.add_parser("reprice", help="per-user totals of recorded calls under another price file")
    r.add_argument(
        "files", nargs="+", help="OTLP JSON lines (the collector's file exporter): billing records or spans"
    )
    r.add_argument("--prices", default=os.environ.get(ENV_PRICES), help="the new prices: " + prices_help)
    r.add_argument("--json", action="store_true")
    r.set_defaults(run=_run_reprice)
    return parser


def _run_quote(args: argparse.Namespace, out: TextIO) -> int:
    result = quote(
        args.model,
        quality=args.quality,
        size=args.size,
        n=args.n,
        partial_images=args.partial_images,
        prompt=args.prompt,
        prompt_chars=args.prompt_chars,
        output_format=args.output_format,
        prices_path=args.prices,
    )
    if args.json:
        document = {
            "model": result.model,
            "quality": result.quality,
            "size": result.size,
            "n": result.n,
            "partial_images": result.partial_images,
            "prompt_chars": result.prompt_chars,
            "output_format": result.output_format,
            "source": result.source,
            "components": {name: _usd(amount) for name, amount in result.components.items()},
            "total": _usd(result.total),
            "pricing_version": result.pricing_version,
        }
        json.dump(document, out, indent=2)
        out.write("\n")
        return EXIT_OK
    out.write(
        f"{result.model}, quality {result.quality or 'auto'}, size {result.size or 'auto'}, n={result.n}, "
        f"{result.partial_images} partial images, prompt {result.prompt_chars} chars"
        f"{', ' + result.output_format if result.output_format else ''}\n"
        f"source {result.source}, prices {result.pricing_version}\n"
    )
    for name, amount in result.components.items():
        out.write(f"  {name:<16}{_usd(amount):>14}\n")
    out.write(f"  {'total':<16}{_usd(result.total):>14} USD\n")
    return EXIT_OK


def _run_prices(args: argparse.Namespace, out: TextIO) -> int:
    table = load_price_table(args.prices)
    if not args.check:
        if args.json:
            json.dump([_row_document(row) for row in price_rows(table)], out, indent=2)
            out.write("\n")
        else:
            _print_table(table, out)
        return EXIT_OK
    check = check_prices(table)
    if args.json:
        document = {
            "ok": check.ok,
            "sdk_models": check.sdk_models,
            "unpriced": check.unpriced,
            "disagreements": check.disagreements,
            "not_in_genai_prices": check.not_in_genai_prices,
        }
        json.dump(document, out, indent=2)
        out.write("\n")
    else:
        out.write(
            f"price table {table.version}: {len(check.sdk_models)} image models named by the openai SDK\n"
        )
        for model in check.unpriced:
            out.write(f"UNPRICED {model}: named by {check.sdk_models[model]}, not in the price table\n")
        for disagreement in check.disagreements:
            out.write(f"DISAGREES {disagreement}\n")
        for model in check.not_in_genai_prices:
            out.write(f"note {model}: not in genai-prices, nothing to compare\n")
        out.write("ok\n" if check.ok else "FAILED\n")
    return EXIT_OK if check.ok else EXIT_FAILED


def _run_doctor(args: argparse.Namespace, out: TextIO) -> int:
    checks = doctor()
    if args.json:
        json.dump([{"check": c.name, "ok": c.ok, "detail": c.detail} for c in checks], out, indent=2)
        out.write("\n")
    else:
        for check in checks:
            out.write(f"{'ok  ' if check.ok else 'FAIL'} {check.name}: {check.detail}\n")
    return EXIT_OK if all(check.ok for check in checks) else EXIT_FAILED


def _run_reprice(args: argparse.Namespace, out: TextIO) -> int:
    result = reprice(args.files, load_price_table(args.prices))
    rows = sorted(result.users.items(), key=lambda item: (item[0] is None, item[0] or ""))
    if args.json:
        document = {
            "read_from": result.read_from,
            "pricing_version": result.pricing_version,
            "users": [{"user": user, **_totals_document(totals)} for user, totals in rows],
            "total": _totals_document(result.total),
        }
        json.dump(document, out, indent=2)
        out.write("\n")
        return EXIT_OK
    out.write(f"{result.read_from}, new prices {result.pricing_version}\n")
    out.write(
        f"{'user':<24}{'calls':>7}{'repriced':>10}{'kept':>6}{'unpriced':>10}{'old USD':>14}{'new USD':>14}\n"
    )
    for user, totals in [*rows, ("total", result.total)]:
        out.write(_totals_line("(no user.id)" if user is None else user, totals))
    return EXIT_OK


def _totals_document(totals: UserTotals) -> dict[str, object]:
    return {
        "calls": totals.calls,
        "repriced": totals.repriced,
        "kept": totals.kept,
        "unpriced": totals.unpriced,
        "old_usd": _usd(totals.old),
        "new_usd": _usd(totals.new),
    }


def _totals_line(user: str, totals: UserTotals) -> str:
    return (
        f"{user:<24}{totals.calls:>7}{totals.repriced:>10}{totals.kept:>6}{totals.unpriced:>10}"
        f"{_usd(totals.old):>14}{_usd(totals.new):>14}\n"
    )


def _row_document(row: TokenModelPrices | PerImageModelPrices) -> dict[str, object]:
    provenance = row.provenance
    document: dict[str, object] = {
        "model": row.model,
        "source": provenance.source,
        "as_of": provenance.as_of.isoformat(),
        "status": provenance.status,
        "notes": provenance.notes,
    }
    if isinstance(row, TokenModelPrices):
        document["usd_per_1m_tokens"] = _token_prices(row)
        document["estimate"] = row.estimate.name if row.estimate is not None else None
    else:
        document["usd_per_image"] = {
            quality: {size: _usd(usd) for size, usd in sizes.items()}
            for quality, sizes in row.usd_per_image.items()
        }
    return document


def _token_prices(row: TokenModelPrices) -> dict[str, str | None]:
    tokens = row.tokens
    prices = {
        "input_text": tokens.input_text,
        "input_cached_text": tokens.input_cached_text,
        "input_image": tokens.input_image,
        "input_cached_image": tokens.input_cached_image,
        "output_image": tokens.output_image,
        "output_text": tokens.output_text,
    }
    shown = {name: None if price is None else _usd(price.scaleb(6)) for name, price in prices.items()}
    if tokens.text_output_as_image:
        shown["output_text"] = "billed_as_image_output"
    return shown


def _print_table(table: PriceTable, out: TextIO) -> None:
    out.write(f"price table {table.version} (USD per 1M tokens, or per image)\n")
    for row in price_rows(table):
        provenance = row.provenance
        if isinstance(row, TokenModelPrices):
            prices = ", ".join(f"{name} {value or '?'}" for name, value in _token_prices(row).items())
        else:
            prices = "; ".join(
                f"{quality} " + ", ".join(f"{size} {_usd(usd)}" for size, usd in sizes.items())
                for quality, sizes in row.usd_per_image.items()
            )
        out.write(f"{row.model}  [{provenance.status}, {provenance.as_of.isoformat()}] {prices}\n")
        out.write(f"    source: {provenance.source}\n")


def _usd(amount: Decimal) -> str:
    """Exact, without exponent or trailing zeros: 0.03267, 40, 0.00003."""
    return f"{amount.normalize():f}"
