"""relayctl: keys, accounts, cooldowns, sessions, outcomes, doctor, secrets, webhooks, the sandbox.

Every command works on the database a running relay uses (`--db`, default $RELAY_DATABASE
or ./relay.db); relays pick up changes within about a second, without a restart.
"""

from __future__ import annotations

import logging

import click

from .accounts_cmd import accounts
from .common import FiniteNumber, json_wanted, remember_options
from .db_cmd import db_group
from .doctor import doctor, secrets_group
from .keys_cmd import keys
from .observe_cmd import cooldowns_group, outcomes_group, sessions_group
from .sandbox_cmd import MAX_COMPLETE_AFTER_SECONDS, serve_sandbox
from .usage_cmd import prices, usage
from .webhooks_cmd import webhooks_group


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="video-relay")
@click.option(
    "--db",
    "db_path",
    help="The relay's database, a SQLite path or a postgresql:// URL, for every command (a command's own --db wins).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON, for every command.")
@click.pass_context
def main(ctx: click.Context, db_path: str | None, as_json: bool) -> None:
    """Operate a video relay: relay keys, upstream accounts, cooldowns, outcomes.

    Every command works on the database the relay uses: --db PATH or --db postgresql://...
    (before or after the command), or $RELAY_DATABASE, or ./relay.db. Credentials are
    encrypted with $RELAY_SECRET_KEY or, when that is unset, the key file beside a SQLite
    database ($RELAY_SECRET_KEY_FILE, or ./relay.key with PostgreSQL). Running relays, every
    replica included, pick up every change within about a second. Add --json (before or after the
    command) for machine-readable output.

    \b
    Getting started:
      relayctl accounts add main --type openai-responses --token-stdin < key.txt
      relayctl keys issue alice --permission openai
      relayctl doctor
    \b
    Day to day:
      relayctl cooldowns --watch
      relayctl outcomes summary --since 24h
      relayctl accounts rotate main --token-stdin < new-key.txt
    \b
    Caps and bills:
      relayctl keys limits alice --usd-per-month 300 --requests-per-minute 60
      relayctl usage --by key --since 30d --csv
    """
    remember_options(ctx, db_path=db_path, as_json=as_json)
    # PostgreSQL's connection pool warns of every failed connection attempt, with host and user:
    # a command says once, in its own error, why the database cannot be used.
    logging.getLogger("psycopg.pool").setLevel(logging.ERROR)


def _host(context: click.Context, parameter: click.Parameter, host: str) -> str:
    # An empty host makes the server listen on every interface: never what an empty variable meant.
    if not host.strip():
        raise click.BadParameter("is empty: give an address to listen on, like 127.0.0.1 (or 0.0.0.0 for every interface)")
    return host


@main.command("sandbox")
@click.option("--host", default="127.0.0.1", show_default=True, callback=_host, help="The address to listen on.")
@click.option("--port", default=8090, show_default=True, type=click.IntRange(0, 65535), help="0 picks a free port.")
@click.option(
    "--complete-after",
    default=1.0,
    show_default=True,
    type=FiniteNumber(0, MAX_COMPLETE_AFTER_SECONDS),
    help=f"Seconds until a job completes (at most {MAX_COMPLETE_AFTER_SECONDS:,}).",
)
@click.option("--fail", type=click.Choice(["429", "401", "402", "500", "slow"]), help="Answer every request with this failure.")
@click.option(
    "--json", "as_json", is_flag=True, help='Once listening, print {"url", "base_api", "base_apis", "host", "port"} as one JSON line.'
)
def sandbox(host: str, port: int, complete_after: float, fail: str | None, as_json: bool) -> None:
    """Run the local emulator of the Videos API (no credentials, no internet).

    Once it listens it prints where; point an account at the base_api it shows.

    \b
    Example:
      relayctl sandbox --port 8090
      relayctl accounts add sandbox --type openai-responses --token test --base-api http://127.0.0.1:8090/v1
      relayctl sandbox --port 0 --json
    """
    serve_sandbox(host, port, complete_after_seconds=complete_after, fail=fail, as_json=json_wanted(as_json))


for command in (
    keys,
    accounts,
    cooldowns_group,
    sessions_group,
    outcomes_group,
    usage,
    prices,
    doctor,
    secrets_group,
    db_group,
    webhooks_group,
):
    main.add_command(command)
