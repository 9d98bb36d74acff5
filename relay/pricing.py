"""The price table: USD per second of video by model and size, and cost estimates from it.

Defaults follow the published per-second prices of the Videos API; operators override or
extend them (`relayctl prices set/load`) for other providers' models. A size of `*` prices
every size of a model that has no exact row.
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

if TYPE_CHECKING:
    from .store import Store

ANY_SIZE = "*"
# Far above any real price; keeps a job's cost (price x seconds) an ordinary number.
MAX_USD_PER_SECOND = 1_000
_SIZE = re.compile(r"[0-9]{1,5}x[0-9]{1,5}")

# The contract's defaults, used when a create leaves a field out.
DEFAULT_MODEL = "sora-2"
DEFAULT_SIZE = "720x1280"
DEFAULT_SECONDS = 4.0

DEFAULT_PRICES: dict[tuple[str, str], float] = {
    ("sora-2", "720x1280"): 0.10,
    ("sora-2", "1280x720"): 0.10,
    ("sora-2-pro", "720x1280"): 0.30,
    ("sora-2-pro", "1280x720"): 0.30,
    ("sora-2-pro", "1024x1792"): 0.50,
    ("sora-2-pro", "1792x1024"): 0.50,
}


def is_size(value: str) -> bool:
    """WIDTHxHEIGHT in pixels, the form every Videos API size takes."""
    return _SIZE.fullmatch(value) is not None


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
    if not model or len(model) > 128:
        raise PriceInputError("a price needs a model name of 1-128 characters")
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
