"""The price table: USD per second of video by model and size, and cost estimates from it.

Defaults follow the published per-second prices of OpenAI's Videos API (Sora) and of the Gemini
API (Veo), and BytePlus's per-token Seedance prices as per second; operators override or extend them
(`relayctl prices set/load`) for other models. A size of `*` prices every size of a model that has no
exact row.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import shown

if TYPE_CHECKING:
    from .store import Store

ANY_SIZE = "*"
# Far above any real price; keeps a job's cost (price x seconds) an ordinary number.
MAX_USD_PER_SECOND = 1_000
# Leading zeros and zero sides name no frame a provider renders.
_SIZE = re.compile(r"[1-9][0-9]{0,4}x[1-9][0-9]{0,4}")
# A model as providers name them (sora-2, veo-3.1-generate-preview, models/veo-3.0, fal-ai/kling-video/...).
_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/@-]{0,127}")
MODEL_NAME_RULE = "1-128 characters: letters, digits and . _ : / @ - (not starting with a sign)"

# The contract's defaults, used when a create leaves a field out.
DEFAULT_MODEL = "sora-2"
DEFAULT_SIZE = "720x1280"
DEFAULT_SECONDS = 4.0

# The OpenAI sizes a Veo create names, by the resolution Veo renders them at.
VEO_720P_SIZES = ("1280x720", "720x1280")
VEO_1080P_SIZES = ("1920x1080", "1080x1920")


def _veo(models: tuple[str, ...], usd_720p: float, usd_1080p: float) -> dict[tuple[str, str], float]:
    """Rows for Veo models: one `*` row when 720p and 1080p cost the same, else a row per size.

    The relay asks Veo for 720p or 1080p only (any other size maps to one of them), so when the two
    differ the `*` row carries the dearer: a reservation for an unlisted size never falls short.
    """
    if usd_720p == usd_1080p:
        return {(model, ANY_SIZE): usd_720p for model in models}
    rows = {(model, ANY_SIZE): max(usd_720p, usd_1080p) for model in models}
    rows.update({(model, size): usd_720p for model in models for size in VEO_720P_SIZES})
    rows.update({(model, size): usd_1080p for model in models for size in VEO_1080P_SIZES})
    return rows


# The OpenAI sizes a Seedance create names most, by the resolution the relay asks for (the shorter side).
SEEDANCE_720P_SIZES = ("1280x720", "720x1280", "1792x1024", "1024x1792")
SEEDANCE_1080P_SIZES = ("1920x1080", "1080x1920")


def _seedance(models: tuple[str, ...], usd_720p: float, usd_1080p: float) -> dict[tuple[str, str], float]:
    """Rows for Seedance models: 720p and 1080p sizes, and a `*` row at the dearer 1080p price, so a
    reservation for any other size (480p ones included) never falls short."""
    rows = {(model, ANY_SIZE): usd_1080p for model in models}
    rows.update({(model, size): usd_720p for model in models for size in SEEDANCE_720P_SIZES})
    rows.update({(model, size): usd_1080p for model in models for size in SEEDANCE_1080P_SIZES})
    return rows


DEFAULT_PRICES: dict[tuple[str, str], float] = {
    ("sora-2", "720x1280"): 0.10,
    ("sora-2", "1280x720"): 0.10,
    ("sora-2-pro", "720x1280"): 0.30,
    ("sora-2-pro", "1280x720"): 0.30,
    ("sora-2-pro", "1024x1792"): 0.50,
    ("sora-2-pro", "1792x1024"): 0.50,
    # Google Veo on the Gemini API's paid tier (video with audio, which Veo 3+ always renders there),
    # from https://ai.google.dev/gemini-api/docs/pricing. Checked 2026-12-05, but only through copies
    # of that page; its own text could not be read, so operators should compare before relying on them:
    # - Veo 3.1 $0.40 at 720p and 1080p: transcriptions of the page read 2026-09-20 and 2026-10-07.
    # - Veo 3.1 Fast $0.10 at 720p and $0.12 at 1080p: a May 2026 comparison quoting the page, and a
    #   reseller's "$0.96 for 8 s at 1080p". It was $0.15 at both until early 2026.
    # - Veo 3 $0.40, Veo 3 Fast $0.15, Veo 2 $0.35: a table of the page collected 2026-02-11; no later
    #   figure was found.
    # 4K ($0.60 a second for Veo 3.1) is not listed: the relay never asks Veo for it.
    **_veo(("veo-3.1-generate-preview", "veo-3.1-generate-001"), 0.40, 0.40),
    **_veo(("veo-3.1-fast-generate-preview", "veo-3.1-fast-generate-001"), 0.10, 0.12),
    **_veo(("veo-3.0-generate-001",), 0.40, 0.40),
    **_veo(("veo-3.0-fast-generate-001",), 0.15, 0.15),
    **_veo(("veo-2.0-generate-001",), 0.35, 0.35),
    # BytePlus ModelArk's Seedance (byteplus accounts, online inference). BytePlus prices video by
    # token, not by second: tokens = width x height x 24 fps x seconds / 1024 of the output, so a
    # second costs the same whatever the ratio, by resolution (rendered 864x480, 1248x704, 1920x1088
    # at 16:9). The per-token prices, $2.5 (1.0 Pro) and $1.8 (1.0 Lite) per million, come from
    # copies of https://docs.byteplus.com/en/docs/ModelArk/1544106 (Pricing) checked 2026-12-05; the
    # page itself could not be read, so operators should compare before relying on them. Per second:
    # Pro $0.0243 / $0.0515 / $0.1224, Lite $0.0175 / $0.0371 / $0.0881 at 480p / 720p / 1080p.
    # 1.0 Pro Fast, 1.5 Pro and the Dreamina 2.x models are left out: no price for them was confirmed.
    **_seedance(("seedance-1-0-pro-250528",), 0.0515, 0.1224),
    **_seedance(("seedance-1-0-lite-t2v-250428", "seedance-1-0-lite-i2v-250428"), 0.0371, 0.0881),
    # Runway's API (runway accounts) bills credits per second of output, whatever the ratio, and sells
    # API credits at $0.01 each (https://docs.dev.runwayml.com/guides/pricing). Checked 2026-12-05,
    # but only through copies: Runway's own API reference in github.com/runwayml/skills
    # (rw-api-reference) and a summary of the pricing page; the page itself could not be read, so
    # operators should compare before relying on them. Credits a second: gen4.5 12, gen4_turbo 5,
    # veo3 40, veo3.1 20 to 40 and veo3.1_fast 10 to 15 (without and with audio: booked at the dearer,
    # since the relay leaves audio at Runway's default). gen3a_turbo 5: Runway's help centre table of
    # credit rates ("How do credits work?"), which the API reference no longer lists.
    **{(model, ANY_SIZE): usd for model, usd in (("gen4.5", 0.12), ("gen4_turbo", 0.05), ("gen3a_turbo", 0.05))},
    **{(model, ANY_SIZE): usd for model, usd in (("veo3", 0.40), ("veo3.1", 0.40), ("veo3.1_fast", 0.15))},
    # fal (fal accounts; the model is fal's model id). fal prices each model on its own page, per second
    # of output at any ratio: "For 5s video your request will cost $1.40. For every additional second
    # you will be charged $0.28" (Kling 2.1 / 2.0 Master), $0.098 (2.1 Pro), $0.056 (2.1 Standard).
    # Checked 2026-12-05, through stored copies of https://fal.ai/models/<model id>/llms.txt (the
    # pages' own text); operators should compare before relying on them. fal serves hundreds of other
    # models: price those with `relayctl prices set` (no other price was confirmed here).
    **{
        (model, ANY_SIZE): usd
        for model, usd in (
            ("fal-ai/kling-video/v2.1/master/text-to-video", 0.28),
            ("fal-ai/kling-video/v2.1/master/image-to-video", 0.28),
            ("fal-ai/kling-video/v2/master/text-to-video", 0.28),
            ("fal-ai/kling-video/v2.1/pro/image-to-video", 0.098),
            ("fal-ai/kling-video/v2.1/standard/image-to-video", 0.056),
        )
    },
}


def is_size(value: str) -> bool:
    """WIDTHxHEIGHT in pixels, the form every Videos API size takes."""
    return _SIZE.fullmatch(value) is not None


def is_model_name(value: str) -> bool:
    """A model name accounts, key limits and prices may hold: shown in tables and metrics labels,
    so no spaces or control characters."""
    return _MODEL_NAME.fullmatch(value) is not None


class PriceInputError(ValueError):
    """A price or price file the relay cannot use."""


@dataclass(frozen=True)
class Price:
    model: str
    size: str
    usd_per_second: float
    source: str  # "default" or "override"


class PriceTable:
    """The defaults overlaid with the operator's rows."""

    def __init__(self, overrides: Mapping[tuple[str, str], float] | None = None) -> None:
        self._overrides = dict(overrides or {})
        self._prices = {**DEFAULT_PRICES, **self._overrides}
        self._models = frozenset(model for model, _ in self._prices)

    def knows(self, model: str) -> bool:
        """Whether the table prices this model at some size."""
        return model in self._models

    def usd_per_second(self, model: str, size: str) -> float | None:
        exact = self._prices.get((model, size))
        return exact if exact is not None else self._prices.get((model, ANY_SIZE))

    def cost(self, model: str, size: str, seconds: float) -> float | None:
        """USD for `seconds` of video, or None when the table has no price for it."""
        rate = self.usd_per_second(model, size)
        return None if rate is None else round(rate * seconds, 6)

    def rows(self) -> list[Price]:
        return [
            Price(model, size, usd, "override" if (model, size) in self._overrides else "default")
            for (model, size), usd in sorted(self._prices.items())
        ]


def validate_price(model: str, size: str, usd_per_second: float) -> tuple[str, str, float]:
    model, size = model.strip(), size.strip()
    if not is_model_name(model):
        raise PriceInputError(f"a price's model name is {MODEL_NAME_RULE}; got {shown(model)}")
    if size != ANY_SIZE and not is_size(size):
        raise PriceInputError(f"a price's size is WIDTHxHEIGHT in pixels, like 1280x720, or '*'; got {size!r}")
    if not (isinstance(usd_per_second, (int, float)) and math.isfinite(usd_per_second) and 0 <= usd_per_second <= MAX_USD_PER_SECOND):
        raise PriceInputError(f"USD per second must be a finite number >= 0 and <= {MAX_USD_PER_SECOND:,}, got {usd_per_second!r}")
    return model, size, float(usd_per_second)


def parse_price_file(text: str) -> list[tuple[str, str, float]]:
    """Rows from JSON (`{"model": {"size": usd_per_second}}`) or CSV (`model,size,usd_per_second`)."""
    stripped = text.lstrip()
    if stripped.startswith("{"):
        try:
            data = json.loads(text)
        except ValueError as error:
            raise PriceInputError(f"the price file is not valid JSON: {error}") from None
        rows: list[tuple[str, str, float]] = []
        for model, sizes in data.items():
            if not isinstance(sizes, dict):
                raise PriceInputError(f"model {model!r}: expected an object of size -> USD per second")
            for size, usd in sizes.items():
                rows.append(validate_price(str(model), str(size), _as_number(usd)))
        return rows
    return [validate_price(*row) for row in _csv_rows(text)]


def _csv_rows(text: str) -> Iterable[tuple[str, str, float]]:
    for number, fields in enumerate(csv.reader(io.StringIO(text)), start=1):
        if not fields or all(not f.strip() for f in fields) or fields[0].strip().startswith("#"):
            continue
        if [f.strip().lower() for f in fields] == ["model", "size", "usd_per_second"]:
            continue
        if len(fields) != 3:
            raise PriceInputError(f"line {number}: expected model,size,usd_per_second")
        yield fields[0], fields[1], _as_number(fields[2])


def _as_number(value: object) -> float:
    if isinstance(value, bool):
        raise PriceInputError(f"not a price: {value!r}")
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise PriceInputError(f"not a price: {value!r}") from None


def set_prices(store: Store, rows: Iterable[tuple[str, str, float]], *, now: float | None = None) -> int:
    """Store price overrides (checked first), all in one transaction; running relays use them within a second."""
    checked = [validate_price(*row) for row in rows]
    store.set_prices(checked, now=time.time() if now is None else now)
    return len(checked)


def unset_price(store: Store, model: str, size: str) -> None:
    """Drop an override: a default price, if any, applies again."""
    store.delete_price(model, size)
