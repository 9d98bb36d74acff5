"""Printing for relayctl: readable tables by default, JSON for scripts."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
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
        return f"{value:.3f}".rstrip("0").rstrip(".")
    if isinstance(value, (list, tuple, set, frozenset)):
        text = ",".join(sorted(str(v) for v in value))
    elif isinstance(value, dict):
        text = " ".join(f"{k}={v}" for k, v in value.items())
    else:
        text = str(value)
    # Values can carry an upstream's words (an error message, a code): one cell, one line.
    return escape_controls(text)


def emit_csv(rows: list[dict[str, Any]], columns: Sequence[str]) -> None:
    """A header line, then one line per row: for spreadsheets and billing scripts."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    click.echo(buffer.getvalue(), nl=False)
