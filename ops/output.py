"""Printing for relayctl: readable tables by default, JSON for scripts."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import math
from collections.abc import Iterable, Sequence
from typing import Any

import click

from relay.logs import escape_controls


def timestamp(value: float | None) -> str | None:
    """ISO 8601 in UTC, e.g. 2026-11-29T19:29:27Z.

    A stored value no date can show (older versions wrote expiries like 1e20) is shown as the
    number it is: one odd row must not make a whole listing fail.
    """
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            moment = dt.datetime.fromtimestamp(value, tz=dt.UTC)
        except (OverflowError, ValueError, OSError):
            pass
        else:
            return moment.replace(tzinfo=None).isoformat(timespec="seconds") + "Z"
    return str(value)


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2))


def emit_json_line(data: Any) -> None:
    """One compact JSON document on one line: a stream of them (JSON Lines) stays parseable."""
    click.echo(json.dumps(data, separators=(",", ":")))


def emit(rows: list[dict[str, Any]], columns: Sequence[str], *, as_json: bool, empty: str) -> None:
    """A listing: a JSON array of objects, or a table of the given columns."""
    if as_json:
        emit_json(rows)
    else:
        emit_table(rows, columns, empty=empty)


def emit_table(rows: Iterable[dict[str, Any]], columns: Sequence[str], *, empty: str) -> None:
    rows = list(rows)
    if not rows:
        click.echo(empty)
        return
    cells = [[_cell(row.get(column)) for column in columns] for row in rows]
    widths = [max(len(column), *(len(line[i]) for line in cells)) for i, column in enumerate(columns)]
    click.echo("  ".join(column.ljust(width) for column, width in zip(columns, widths, strict=True)).rstrip())
    click.echo("  ".join("-" * width for width in widths))
    for line in cells:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())


def emit_record(record: dict[str, Any], *, as_json: bool) -> None:
    """One object: JSON, or `field  value` lines."""
    if as_json:
        emit_json(record)
        return
    width = max(len(name) for name in record)
    for name, value in record.items():
        click.echo(f"{name.ljust(width)}  {_cell(value)}".rstrip())


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return plain_number(value)
    if isinstance(value, (list, tuple, set, frozenset)):
        text = ",".join(sorted(str(v) for v in value))
    elif isinstance(value, dict):
        text = " ".join(f"{k}={v}" for k, v in value.items())
    else:
        text = str(value)
    # Values can carry an upstream's words (an error message, a code): one cell, one line.
    return escape_controls(text)


# Digits a float holds for certain: every decimal of up to 15 significant digits (every price,
# budget or cap an operator types) comes back exactly, and a sum's binary noise
# (0.1 + 0.2 = 0.30000000000000004) is rounded away.
_SIGNIFICANT_DIGITS = 15
# Past this a plain decimal is a row of zeros nobody reads: such values keep their exponent.
_PLAIN_LIMIT = 1e15


def plain_number(value: float) -> str:
    """A float as a plain decimal, every significant digit kept: 0.0004, 0.00001, 0.0881, 2.5, 3."""
    if not math.isfinite(value):
        return str(value)
    text = f"{value:.{_SIGNIFICANT_DIGITS}g}"
    if "e" not in text or abs(value) >= _PLAIN_LIMIT:
        return text
    # Small numbers come out of "g" with an exponent (1e-05): spell out their leading zeros.
    mantissa, exponent = text.split("e")
    sign, digits = ("-", mantissa[1:]) if mantissa.startswith("-") else ("", mantissa)
    whole, _, fraction = digits.partition(".")
    return f"{sign}0.{'0' * (-int(exponent) - 1)}{whole}{fraction}"


def emit_csv(rows: list[dict[str, Any]], columns: Sequence[str]) -> None:
    """A header line, then one line per row: for spreadsheets and billing scripts."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    click.echo(buffer.getvalue(), nl=False)
