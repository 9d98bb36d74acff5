"""Assembles the sandbox: every provider's emulator and the control API, on one app (one port)."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Final, TypedDict, Unpack

import uvicorn
from starlette.applications import Starlette
from starlette.routing import Mount

from . import azure, byteplus, fal, gemini, openai_contract, runway, storage
from .content import padding_problem
from .control import control_routes
from .errors import exception_handlers
from .faults import PresetCatalog, add_rule, fail_preset
from .gate import SandboxApp
from .openai_contract import OPENAI, ContractMount, contract_app, missing_bearer
from .state import SandboxState, load_assets

PRESETS: Final = PresetCatalog(
    shown=OPENAI.name,
    replies={
        OPENAI.name: openai_contract.preset_reply,
        azure.AZURE.name: azure.preset_reply,
        gemini.GEMINI.name: gemini.preset_reply,
        byteplus.BYTEPLUS.name: byteplus.preset_reply,
        runway.RUNWAY.name: runway.preset_reply,
        fal.FAL.name: fal.preset_reply,
    },
)


class SandboxOptions(TypedDict, total=False):
    complete_after_seconds: float
    fail: str | None
    content_bytes: int | None
    seed: int | None


def create_sandbox_app(
    *,
    complete_after_seconds: float = 1.0,
    fail: str | None = None,
    content_bytes: int | None = None,
    clock: Callable[[], float] = time.monotonic,
    seed: int | None = None,
) -> Starlette:
    """Build the sandbox upstream: OpenAI at ``/v1`` (and ``/backend-api``, and the root), Azure at
    ``/openai/v1``, Gemini at ``/v1beta`` (its downloads redirect to ``/_gcs``), BytePlus ModelArk at
    ``/byteplus/api/v3`` (its videos under ``/byteplus/tos``), fal's queue at ``/fal`` (its CDN at
    ``/_falcdn``), Runway at ``/runway/v1`` (its CDN at ``/runway/cdn``), control at ``/_sandbox``.

    ``fail`` (``429``/``401``/``402``/``500``/``slow`` or a preset name) installs that preset as
    an unlimited fault rule, for every provider; ``content_bytes`` pads every video download to that
    many bytes; ``clock`` (monotonic seconds) drives job progress and lets tests advance time;
    ``seed`` makes the draws of rules with a ``probability`` repeatable.
    """
    if complete_after_seconds < 0:
        raise ValueError("complete_after_seconds must be >= 0")
    assets = load_assets()
    if content_bytes is not None:
        problem = padding_problem(content_bytes, len(assets["video"].data))
        if problem is not None:
            raise ValueError(problem)
    state = SandboxState(complete_after_seconds, content_bytes, clock, assets, PRESETS, rng=random.Random(seed))
    if fail is not None:
        add_rule(state, {"preset": fail_preset(fail)})
    openai_app = contract_app(state, ContractMount(OPENAI, state.openai, missing_bearer))
    app = SandboxApp(
        routes=[
            Mount("/_sandbox", routes=control_routes()),
            Mount(storage.PREFIX, app=storage.storage_app(state)),
            Mount(azure.PREFIX, app=contract_app(state, azure.azure_mount(state))),
            Mount(gemini.PREFIX, app=gemini.gemini_app(state)),
            Mount(byteplus.PREFIX, app=byteplus.byteplus_app(state)),
            Mount(runway.PREFIX, app=runway.runway_app(state)),
            Mount(fal.PREFIX, app=fal.fal_app(state)),
            Mount(fal.CDN_PREFIX, app=fal.cdn_app(state)),
            Mount("/v1", app=openai_app),
            Mount("/backend-api", app=openai_app),
            Mount("", app=openai_app),
        ],
        exception_handlers=exception_handlers(),
    )
    app.state.sandbox = state
    return app


def run_sandbox(host: str, port: int, **options: Unpack[SandboxOptions]) -> None:
    uvicorn.run(create_sandbox_app(**options), host=host, port=port, log_level="warning")
