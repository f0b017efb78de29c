"""What an answer costs: a price table of USD per 1M tokens, by model name or glob."""

from __future__ import annotations

import fnmatch
from decimal import Decimal
from importlib.resources import files
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from chatlens.inference.base import Usage

_MILLION = Decimal(1_000_000)
# Costs are stored with 8 decimal places (Numeric(14, 8)): a few tokens of a cheap model.
_QUANTUM = Decimal("0.00000001")
# ... and at most 6 digits before the point: a cost is never more (nor below 0).
MAX_COST = Decimal("999999.99999999")

Price = Annotated[Decimal, Field(ge=0)]


class PricingError(ValueError):
    """The price table is missing or invalid; str() is one line."""


class ModelPrice(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    input: Price
    cached_input: Price | None = None  # defaults to the input price
    output: Price


class PriceTable(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    version: Literal[1] = 1
    models: dict[str, ModelPrice]


def default_pricing_path() -> Path:
    return Path(str(files("chatlens") / "data" / "pricing.yaml"))


class Pricing:
    """Looks up a model's price (exact name first, then globs in file order) and costs usage."""

    def __init__(self, table: PriceTable) -> None:
        self._exact = {name: price for name, price in table.models.items() if not _is_glob(name)}
        self._globs = [(name, price) for name, price in table.models.items() if _is_glob(name)]
        self._cache: dict[str, ModelPrice | None] = {}

    def price(self, model: str) -> ModelPrice | None:
        if model in self._cache:
            return self._cache[model]
        found = self._exact.get(model)
        if found is None:
            found = next((p for name, p in self._globs if fnmatch.fnmatchcase(model, name)), None)
        if len(self._cache) < 4096:
            self._cache[model] = found
        return found

    def cost(self, model: str, usage: Usage) -> Decimal:
        """USD for one answer; 0 for a model the table does not price."""
        price = self.price(model)
        if price is None:
            return Decimal(0)
        prompt = max(0, usage.prompt_tokens)
        cached = max(0, min(usage.cached_prompt_tokens, prompt))
        cached_price = price.cached_input if price.cached_input is not None else price.input
        total = (
            (prompt - cached) * price.input
            + cached * cached_price
            + max(0, usage.completion_tokens) * price.output
        ) / _MILLION
        return min(total, MAX_COST).quantize(_QUANTUM)


def _is_glob(name: str) -> bool:
    return any(ch in name for ch in "*?[")


def load_pricing(path: Path | None = None) -> Pricing:
    """The price table at `path` (the shipped one by default); PricingError when invalid."""
    source = path or default_pricing_path()
    try:
        raw = yaml.safe_load(source.read_text(encoding="utf-8"))
    except OSError as exc:
        raise PricingError(f"cannot read price table {source}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise PricingError(f"price table {source} is not valid YAML: {exc}") from None
    try:
        table = PriceTable.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise PricingError(f"price table {source}: {where}: {first['msg']}") from None
    return Pricing(table)
