"""The stance label file format: one decision per JSONL line, validated here and nowhere else."""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from training.data.article import InputError

STANCES = ("anti_occident", "neutre", "pro_occident")
GUIDELINES_VERSION = "2.2"
RESERVED_SPLITS = frozenset({"test", "valid"})
Stance = Literal["anti_occident", "neutre", "pro_occident"]


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


def squash(text: str) -> str:
    """Whitespace- and quote-insensitive form used to check that evidence occurs verbatim."""
    text = text.replace("\u2019", "'").replace("\u00ab", '"').replace("\u00bb", '"').replace("“", '"').replace("”", '"')
    return re.sub(r"\s+", " ", text).strip()


def evidence_problems(ann: StanceAnnotation, article_text: str) -> list[str]:
    haystack = squash(article_text)
    return [f"evidence not found verbatim in article {ann.id}: {e[:80]!r}" for e in ann.evidence if squash(e) not in haystack]


def read_annotations(path: Path) -> list[StanceAnnotation]:
    """Read a label file; any invalid line is an InputError naming the file, the line and the field."""
    out: list[StanceAnnotation] = []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise InputError(f"{path}: no such annotation file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: unreadable annotation file: {e}") from None
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            out.append(StanceAnnotation.model_validate(json.loads(line)))
        except json.JSONDecodeError as e:
            raise InputError(f"{path}:{lineno}: invalid JSON: {e.msg}") from None
        except ValidationError as e:
            err = e.errors()[0]
            where = ".".join(str(x) for x in err["loc"]) or "line"
            raise InputError(f"{path}:{lineno}: {where}: {err['msg']}") from None
    return out


def write_jsonl_atomic(path: Path, rows: list[dict]) -> None:
    from training.io import atomic_write_text

    atomic_write_text(Path(path), "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
