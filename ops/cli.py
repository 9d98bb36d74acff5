"""relayctl: keys, accounts, cooldowns, sessions, outcomes, doctor, secrets, the sandbox.

Every command works on the database a running relay uses (`--db`, default $RELAY_DATABASE
or ./relay.db); relays pick up changes within about a second, without a restart.
"""

from __future__ import annotations

import click

from .accounts_cmd import accounts
from .doctor import doctor, secrets_group
from .keys_cmd import keys
from .observe_cmd import cooldowns_group, outcomes_group, sessions_group
from .usage_cmd import prices, usage


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="video-relay")
def main() -> None:
    """Operate a video relay: relay keys, upstream accounts, cooldowns, outcomes.

    Every command works on the SQLite database the relay uses: --db PATH, or
    $RELAY_DATABASE, or ./relay.db. Credentials are encrypted with $RELAY_SECRET_KEY or,
    when that is unset, the key file beside the database. Running relays pick up every
    change within about a second. Add --json to any command for machine-readable output.

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


@main.command("sandbox")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8090, show_default=True, type=int)
@click.option("--complete-after", default=1.0, show_default=True, type=float, help="Seconds until a job completes.")
@click.option("--fail", type=click.Choice(["429", "401", "402", "500", "slow"]), help="Answer every request with this failure.")
def sandbox(host: str, port: int, complete_after: float, fail: str | None) -> None:
    """Run the local emulator of the Videos API (no credentials, no internet).

    Point an account at it with --base-api http://HOST:PORT/v1.

    \b
    Example:
      relayctl sandbox --port 8090
      relayctl accounts add sandbox --type openai-responses --token test --base-api http://127.0.0.1:8090/v1
    """
    from relay.sandbox import run_sandbox

    run_sandbox(host, port, complete_after_seconds=complete_after, fail=fail)


for command in (keys, accounts, cooldowns_group, sessions_group, outcomes_group, usage, prices, doctor, secrets_group):
    main.add_command(command)
