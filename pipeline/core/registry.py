"""Registries: one per family of interchangeable parts, so each family's names live in one place.

    METRICS = Registry[Metric]("metric")            # pipeline/evaluation/metrics.py
    METRICS.add("accuracy", Metric(...))
    METRICS["accuracy"]; METRICS.lookup(name, "prepare.metric"); "qwk" in METRICS; METRICS.names()
    METRICS.check(params.metric, err, "metric", also=("auto",))   # in a params section's validate()

The families: metrics and ensemble methods (pipeline/evaluation/), layouts (pipeline/data/layouts/),
TTA views and our networks (pipeline/modeling/), exported graphs (pipeline/export/choice.py).
Params validation, error messages, `foldwise init` and the CLI's help read the names from here,
never from a list of their own.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from pipeline.core.config import check_choice
from serve.errors import UserError

T = TypeVar("T")


class Registry(Generic[T]):
    """Name -> part of one family, in the order they were added."""

    def __init__(self, family: str) -> None:
        self.family = family
        self._items: dict[str, T] = {}

    def add(self, name: str, item: T) -> T:
        if name in self._items:
            raise ValueError(f"{self.family} '{name}' is registered twice")
        self._items[name] = item
        return item

    def register(self, name: str | None = None) -> Callable[[T], T]:
        """Decorator: `@VIEWS.register("hflip")`, or `@register()` to use the function's `__name__`."""
        def decorate(item: T) -> T:
            return self.add(name or item.__name__, item)
        return decorate

    def names(self) -> tuple[str, ...]:
        return tuple(self._items)

    def lookup(self, name: str, where: str = "") -> T:
        """The part called `name`; UserError naming the family and the known names otherwise (not
        dict.get: there is no default)."""
        if name not in self._items:
            prefix = f"{where}: " if where else ""
            raise UserError(f"{prefix}unknown {self.family} '{name}' (known: {', '.join(self._items)})")
        return self._items[name]

    def check(self, value: str, err: Callable[..., UserError], key: str, also: tuple[str, ...] = ()) -> None:
        """For a params section's `validate`: `value` must be a registered name (or one of `also`)."""
        check_choice(value, (*also, *self._items), err, key)

    def __getitem__(self, name: str) -> T:
        return self._items[name]

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def items(self):
        return self._items.items()

    def values(self):
        return self._items.values()
