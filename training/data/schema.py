"""The project's shared vocabulary: tasks, label names, splits, and the stance annotation record.

Every other module takes these words from here, so that a label or a split is spelled once. The stance
annotation record (`StanceAnnotation`) is validated here and nowhere else, and `read_stance_annotations` is its
one reader: `on_error="raise"` for the annotation tools (a bad line stops with file:line), `on_error="skip"` for
the data build (a bad line is a counted skip).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from training.data.article import Skip
from training.errors import InputError
from training.io import read_jsonl

TASKS = ("topic", "stance")
STANCES = ("anti_occident", "neutre", "pro_occident")
NEUTRAL = "neutre"  # the stance that takes no position (no evidence, nothing to explain)
Stance = Literal["anti_occident", "neutre", "pro_occident"]
ORANGESUM_SECTIONS = (
    "auto", "france", "monde", "politique", "societe/culture", "societe/environnement", "societe/fait-divers",
    "societe/high-tech", "societe/insolite", "societe/media", "societe/people", "societe/sante",
)
SPLITS = ("train", "validation", "test")  # the built DatasetDict's splits
RESERVED_SPLITS = frozenset({"test", "valid"})  # OrangeSum's own splits kept for evaluation: never annotated or trained on
GUIDELINES_VERSION = "2.2"


class Strict(BaseModel):
    """A record or config section that refuses unknown keys (a typo is an error, not a silent default)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def off_or_folds(v: int) -> int:
    """A config's fold count: 0 (off) or at least 2 (one fold has nothing to hold out)."""
    if v == 1:
        raise ValueError("must be 0 (off) or at least 2 folds")
    return v


class Vote(BaseModel):
    model_config = ConfigDict(extra="forbid")
    annotator: str
    stance: Stance
    confidence: int = Field(ge=1, le=3)


class StanceAnnotation(BaseModel):
    """One annotator's decision on one article (or, with `votes`, the adjudicated decision)."""

    model_config = ConfigDict(extra="forbid")
    id: str
    stance: Stance
    confidence: int = Field(ge=1, le=3)
    evidence: list[str] = Field(default_factory=list)
    why: str = ""
    annotator: str = Field(min_length=1)
    guidelines: str = GUIDELINES_VERSION
    stratum: str = Field(min_length=1)
    time: str = Field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    votes: list[Vote] | None = None  # adjudicated files only: every annotator's vote, kept

    @field_validator("id", mode="before")
    @classmethod
    def _id_as_str(cls, v):
        if isinstance(v, bool) or not isinstance(v, (str, int)):
            raise ValueError("id must be a string or an integer")
        return str(v)

    @field_validator("evidence", mode="before")
    @classmethod
    def _evidence_list(cls, v):
        return [v] if isinstance(v, str) else v

    @model_validator(mode="after")
    def _evidence_for_stance(self):
        if self.stance != "neutre" and not any(e.strip() for e in self.evidence):
            raise ValueError(f"a '{self.stance}' label needs evidence: the sentence(s) of the article that carry it")
        return self


def read_stance_annotations(path: Path, on_error: Literal["raise", "skip"] = "raise",
                            skip: Callable[[Skip], None] | None = None) -> list[StanceAnnotation]:
    """Every decision in a stance label file, in file order. A bad line (invalid JSON, a field that does not
    validate) is an InputError naming file:line and the field (`raise`), or a counted `Skip` (`skip`)."""
    return [ann for _, ann in iter_stance_annotations(path, on_error, skip)]


def iter_stance_annotations(path: Path, on_error: Literal["raise", "skip"] = "raise",
                            skip: Callable[[Skip], None] | None = None) -> Iterator[tuple[int, StanceAnnotation]]:
    """(line number, decision) pairs of `read_stance_annotations`."""
    if on_error == "skip" and skip is None:
        raise ValueError("on_error='skip' needs a skip sink")

    def bad(reason: str, line: int | None = None) -> None:
        if on_error == "raise":
            raise InputError(f"{path}:{line}: {reason}" if line is not None else f"{path}: {reason}")
        skip(Skip(str(path), reason, line=line))

    try:
        for lineno, rec in read_jsonl(Path(path), on_error=lambda lineno, msg: bad(f"invalid JSON: {msg}", lineno)):
            try:
                ann = StanceAnnotation.model_validate(rec)
            except ValidationError as e:
                err = e.errors()[0]
                where = ".".join(str(x) for x in err["loc"]) or "line"
                detail = f"{where}: {err['msg']}"
                bad(detail if on_error == "raise" else f"invalid annotation: {detail}", lineno)
                continue
            yield lineno, ann
    except FileNotFoundError:
        bad("no such annotation file")
    except (OSError, UnicodeDecodeError) as e:
        bad(f"unreadable annotation file: {e}")


def source_key(source: str | None) -> str | None:
    """A source as the models compare it: a site name or a URL -> lowercase host without `www.`
    ('https://www.Actu.Orange.fr/x' and 'actu.orange.fr' are one key), a build source name ('orangesum') as it is,
    lowercased; None for nothing."""
    from urllib.parse import urlsplit

    if not isinstance(source, str) or not source.strip():
        return None
    s = source.strip()
    try:
        host = urlsplit(s if "://" in s else f"//{s}").hostname  # a bare host or name reads as a network location
    except ValueError:  # e.g. an unclosed '[' (IPv6 literal): no host to compare, like no source
        return None
    return (host.removeprefix("www.") or None) if host else None


def squash(text: str) -> str:
    """Whitespace- and quote-insensitive form used to check that evidence occurs verbatim."""
    text = text.replace("\u2019", "'").replace("\u00ab", '"').replace("\u00bb", '"').replace("“", '"').replace("”", '"')
    return re.sub(r"\s+", " ", text).strip()


def evidence_problems(ann: StanceAnnotation, article_text: str) -> list[str]:
    haystack = squash(article_text)
    return [f"evidence not found verbatim in article {ann.id}: {e[:80]!r}" for e in ann.evidence if squash(e) not in haystack]
