"""The one record every reader produces and every later stage consumes."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class Article:
    id: str
    title: str
    body: str
    source: str
    abstract: str = ""
    date: str | None = None
    url: str | None = None
    section: str | None = None
    origin_split: str | None = None  # the split the source itself assigns (OrangeSum: train/valid/test/unsplit)
    path: str | None = None
    tags: tuple[str, ...] = field(default_factory=tuple)

    @property
    def text(self) -> str:
        """What models read: title, lead and body, one per paragraph."""
        return "\n".join(part for part in (self.title, self.abstract, self.body) if part)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["tags"] = list(self.tags)
        return d


@dataclass
class Skip:
    """An input that was left out, and why (counted in stats.json)."""

    path: str
    reason: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line is not None else self.path
        return f"{where}: {self.reason}"
