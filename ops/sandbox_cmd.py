"""relayctl sandbox: serve the providers' emulators (OpenAI, Azure OpenAI, Gemini Veo) and say where they listen."""

from __future__ import annotations

import json
import socket

import click
import uvicorn

from relay.sandbox import create_sandbox_app

# A job that takes longer than a day to complete is no test anyone waits for.
MAX_COMPLETE_AFTER_SECONDS = 86400


class _AnnouncingServer(uvicorn.Server):
    """A uvicorn server that prints its address once it listens (with --port 0, the port it got)."""

    def __init__(self, config: uvicorn.Config, *, as_json: bool) -> None:
        super().__init__(config)
        self.as_json = as_json

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and self.servers and self.servers[0].sockets:
            host, port = self.servers[0].sockets[0].getsockname()[:2]
            announce(host, port, as_json=self.as_json)


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
    app = create_sandbox_app(complete_after_seconds=complete_after_seconds, fail=fail)
    _AnnouncingServer(uvicorn.Config(app, host=host, port=port, log_level="warning"), as_json=as_json).run()
