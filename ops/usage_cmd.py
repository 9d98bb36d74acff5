"""relayctl usage and prices: what users spent, and the table it is priced from."""

from __future__ import annotations

import time
from pathlib import Path

import click

from relay.pricing import PriceTable, parse_price_file, set_prices, unset_price, validate_price

from .common import DURATION, database_options, open_db, read_db
from .output import emit, emit_csv, emit_json, plain_number, timestamp

USAGE_FIGURES = ["requests", "jobs", "completed", "failed", "video_seconds", "usd", "usd_reserved"]
PRICE_COLUMNS = ["model", "size", "usd_per_second", "source"]


@click.command("usage")
@click.option("--by", "group", type=click.Choice(["key", "account", "model"]), default="key", show_default=True)
@click.option("--since", type=DURATION, default="30d", show_default=True, help="Window, e.g. 24h, 7d, 30d.")
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV (with a header line) instead of a table.")
@database_options
def usage(group: str, since: float, as_csv: bool, db_path: str, as_json: bool) -> None:
    """What each key, account or model used: requests, videos, video-seconds, USD.

    requests counts upstream attempts (with --by model: jobs created); jobs are creates,
    remixes, edits and extensions the upstream accepted in the window. video_seconds and usd
    are settled by completed jobs; usd_reserved is held by jobs not yet finished. Failed
    jobs cost nothing. USD comes from the price table ('relayctl prices').

    \b
    Example:
      relayctl usage --by key --since 7d
      relayctl usage --by model --since 30d --csv > usage.csv
    """
    if as_csv and as_json:
        raise click.UsageError("choose --csv or --json, not both")
    store, _ = read_db(db_path)
    rows = store.usage_report(group, since=time.time() - since)
    columns = [group, *USAGE_FIGURES]
    if as_csv:
        emit_csv(rows, columns)
    else:
        emit(rows, columns, as_json=as_json, empty="No usage in that window.")


@click.group("prices")
def prices() -> None:
    """The price table (USD per second of video by model and size) behind budgets and usage."""


@prices.command("list")
@database_options
def prices_list(db_path: str, as_json: bool) -> None:
    """Every price the relay charges by: defaults and your overrides. Size '*' covers a model's other sizes.

    \b
    Example:
      relayctl prices list
    """
    store, _ = read_db(db_path)
    rows = [vars(price) for price in PriceTable(store.list_prices()).rows()]
    emit(rows, PRICE_COLUMNS, as_json=as_json, empty="No prices.")


# "-1" must reach the price check as a number, not be taken for an option.
@prices.command("set", context_settings={"ignore_unknown_options": True})
@click.argument("model")
@click.argument("size")
@click.argument("usd_per_second", type=float)
@database_options
def prices_set(model: str, size: str, usd_per_second: float, db_path: str, as_json: bool) -> None:
    """Charge USD_PER_SECOND for MODEL at SIZE ('*' for every size without its own price).

    New prices apply to jobs created from now on; running relays pick them up within a second.

    \b
    Example:
      relayctl prices set sora-2-pro 1792x1024 0.5
      relayctl prices set acme-video '*' 0.04
    """
    row = validate_price(model, size, usd_per_second)
    store, _ = open_db(db_path, create=True)
    set_prices(store, [row])
    if as_json:
        emit_json({"model": row[0], "size": row[1], "usd_per_second": row[2]})
    else:
        click.echo(f"{row[0]} at {row[1]} now costs ${plain_number(row[2])} per second.")


@prices.command("unset")
@click.argument("model")
@click.argument("size")
@database_options
def prices_unset(model: str, size: str, db_path: str, as_json: bool) -> None:
    """Drop your price for MODEL at SIZE (a default price, if any, applies again).

    \b
    Example:
      relayctl prices unset acme-video '*'
    """
    store, _ = open_db(db_path)
    unset_price(store, model, size)
    if as_json:
        emit_json({"model": model, "size": size, "removed": True})
    else:
        click.echo(f"Removed the price override for {model} at {size}.")


@prices.command("load")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@database_options
def prices_load(path: Path, db_path: str, as_json: bool) -> None:
    """Set many prices from a file: JSON {"model": {"size": usd_per_second}} or CSV model,size,usd_per_second.

    \b
    Example:
      relayctl prices load prices.json
    """
    try:
        # utf-8-sig: spreadsheets save CSV with a byte-order mark, which is no part of the first model's name.
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise click.ClickException(f"{click.format_filename(path)} is not UTF-8 text: save it as UTF-8 (JSON or CSV)") from None
    except OSError as error:
        raise click.ClickException(f"{click.format_filename(path)} cannot be read ({error.strerror})") from None
    rows = parse_price_file(text)
    store, _ = open_db(db_path, create=True)
    set_prices(store, rows)
    if as_json:
        emit_json({"loaded": len(rows), "at": timestamp(time.time())})
    else:
        click.echo(f"Loaded {len(rows)} price(s) from {path.name}.")
