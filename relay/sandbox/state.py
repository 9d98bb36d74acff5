"""What the sandbox remembers: the shared request log, fault rules and counters, and each emulator's jobs."""

from __future__ import annotations

import itertools
import random
import secrets
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final

from starlette.requests import Request

if TYPE_CHECKING:
    from .faults import FaultRule, PresetCatalog

# The assets stay a sibling of this package, where the package data (pyproject) points.
ASSETS_DIR: Final = Path(__file__).resolve().parent.parent / "sandbox_assets"
VARIANT_ASSETS: Final = MappingProxyType(
    {
        "video": ("sample.mp4", "video/mp4"),
        "thumbnail": ("thumbnail.webp", "image/webp"),
        "spritesheet": ("spritesheet.jpg", "image/jpeg"),
    }
)
REQUEST_LOG_CAP: Final = 1000


@dataclass(frozen=True)
class Asset:
    data: bytes
    media_type: str


# --------------------------------------------------------------------------- the OpenAI Videos contract


@dataclass
class VideoJob:
    id: str
    token: str
    model: str
    prompt: str
    size: str
    seconds: str
    created_wall: float
    started: float
    remixed_from_video_id: str | None
    fails: bool
    content_bytes: int | None
    # `[never]` in the prompt: the job stays in_progress for good (a render that hangs upstream).
    never_finishes: bool = False


@dataclass(frozen=True)
class Character:
    id: str
    token: str
    name: str
    created_at: int


@dataclass
class RateBucket:
    level: float
    updated: float


@dataclass
class ContractStore:
    """The jobs of one mount of the OpenAI Videos contract; OpenAI and Azure each have their own, like two services."""

    videos: dict[str, VideoJob] = field(default_factory=dict)
    characters: dict[str, Character] = field(default_factory=dict)
    rate_buckets: dict[str, RateBucket] = field(default_factory=dict)


# --------------------------------------------------------------------------- Gemini (Veo)


@dataclass
class Operation:
    """A Veo long-running operation; its outcome is fixed at creation (prompt markers), revealed when done."""

    id: str
    model: str
    token: str
    prompt: str
    started: float
    outcome: str  # "succeeded", "failed" or "filtered"
    file_ids: tuple[str, ...]

    @property
    def name(self) -> str:
        return f"models/{self.model}/operations/{self.id}"


@dataclass(frozen=True)
class GeneratedFile:
    id: str
    operation_id: str
    token: str
    content_bytes: int | None


@dataclass
class GeminiStore:
    operations: dict[str, Operation] = field(default_factory=dict)
    files: dict[str, GeneratedFile] = field(default_factory=dict)
    # Signs the storage URLs that file downloads redirect to.
    url_key: bytes = field(default_factory=lambda: secrets.token_bytes(32))


# --------------------------------------------------------------------------- BytePlus ModelArk (Seedance)


@dataclass
class SeedanceTask:
    """A video generation task; its outcome is fixed at creation (prompt markers), revealed when it finishes."""

    id: str
    model: str
    token: str
    request: dict[str, Any]
    started: float
    created_wall: int
    outcome: str  # "succeeded", "failed" or "filtered"
    content_bytes: int | None
    cancelled: bool = False


@dataclass
class BytePlusStore:
    tasks: dict[str, SeedanceTask] = field(default_factory=dict)
    # Signs the storage links that finished tasks' video_url point at.
    url_key: bytes = field(default_factory=lambda: secrets.token_bytes(32))


# --------------------------------------------------------------------------- fal (queue)


@dataclass
class FalRequest:
    """A request in fal's queue; its outcome is fixed at submission (prompt markers), revealed when it completes."""

    id: str
    app: str
    model: str
    token: str
    started: float
    outcome: str  # "succeeded", "failed" or "filtered"
    content_bytes: int | None
    # The unguessable name of its video on the CDN stand-in: like fal's CDN, the link is the only key.
    file_id: str
    cancelled: bool = False


@dataclass
class FalStore:
    requests: dict[str, FalRequest] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)  # file id -> request id


# --------------------------------------------------------------------------- the whole sandbox


@dataclass
class SandboxState:
    complete_after_seconds: float
    content_bytes: int | None
    clock: Callable[[], float]
    assets: Mapping[str, Asset]
    presets: PresetCatalog
    openai: ContractStore = field(default_factory=ContractStore)
    azure: ContractStore = field(default_factory=ContractStore)
    gemini: GeminiStore = field(default_factory=GeminiStore)
    fal: FalStore = field(default_factory=FalStore)
    byteplus: BytePlusStore = field(default_factory=BytePlusStore)
    faults: list[FaultRule] = field(default_factory=list)
    requests: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=REQUEST_LOG_CAP))
    fault_ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    # Content bodies being sent right now: tests watch it drop to 0 when a client goes away.
    open_streams: int = 0
    # Provider requests received since start; unlike `requests`, never capped or cleared.
    requests_total: int = 0
    # Content bytes handed to the server since start: shows whether a client's download was read.
    content_bytes_total: int = 0
    # Draws for rules with a `probability`.
    rng: random.Random = field(default_factory=random.Random)


def load_assets() -> Mapping[str, Asset]:
    return MappingProxyType(
        {variant: Asset((ASSETS_DIR / filename).read_bytes(), media_type) for variant, (filename, media_type) in VARIANT_ASSETS.items()}
    )


def sandbox_state(request: Request) -> SandboxState:
    state: SandboxState = request.app.state.sandbox
    return state
