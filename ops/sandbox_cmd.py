"""relayctl sandbox: serve the providers' emulators (OpenAI, Azure OpenAI, Gemini Veo) and say where they listen."""

from __future__ import annotations

import json
import os
import socket

import click

# A job that takes longer than a day to complete is no test anyone waits for.
MAX_COMPLETE_AFTER_SECONDS = 86400


def announce(host: str, port: int, *, as_json: bool) -> None:
    """Where each provider's emulator listens: the --base-api to give each type of account."""
    url = f"http://{f'[{host}]' if ':' in host else host}:{port}"
    bases = {
        "openai": f"{url}/v1",
        "azure-openai": f"{url}/openai/v1",
        "gemini": f"{url}/v1beta",
        "runway": f"{url}/runway/v1",
        "byteplus": f"{url}/byteplus/api/v3",
        "fal": f"{url}/fal",
    }
    if as_json:
        click.echo(json.dumps({"url": url, "base_api": bases["openai"], "base_apis": bases, "host": host, "port": port}))
    else:
        click.echo(
            f"Sandbox upstream on {bases['openai']} (OpenAI), {bases['azure-openai']} (Azure OpenAI),"
            f" {bases['gemini']} (Gemini Veo), {bases['runway']} (Runway), {bases['byteplus']} (BytePlus Seedance),"
            f" {bases['fal']} (fal)"
            " (Ctrl-C to stop)."
        )


def serve_sandbox(host: str, port: int, *, complete_after_seconds: float, fail: str | None, as_json: bool) -> None:
    # The server and the emulators load here, not when relayctl starts: every other command,
    # which operators and scripts run many times a day, starts without them.
    import uvicorn

    from relay.sandbox import create_sandbox_app

    class AnnouncingServer(uvicorn.Server):
        """Prints its address once it listens (with --port 0, the port it got)."""

        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            if self.started and self.servers and self.servers[0].sockets:
                bound_host, bound_port = self.servers[0].sockets[0].getsockname()[:2]
                announce(bound_host, bound_port, as_json=as_json)

    app = create_sandbox_app(complete_after_seconds=complete_after_seconds, fail=fail)
    try:
        # Bound here: a port in use is one Error line, not uvicorn's log line and exit code 3.
        listening = socket.create_server((host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET)
    except OSError as error:
        reason = os.strerror(error.errno) if error.errno else str(error)
        raise click.ClickException(f"cannot listen on {host}:{port} ({reason})") from None
    AnnouncingServer(uvicorn.Config(app, log_level="warning")).run(sockets=[listening])
