"""The one served-model contract, shared by every model family.

Input: a DataFrame with a `text` column (the raw article as a user has it: title on the first line,
boilerplate possibly still in), an optional `title` column (then `text` is the body), an optional `date`
column (publication date, ISO `YYYY-MM-DD`) and an optional `source` column (the site the article comes from: a
host such as `actu.orange.fr`, a URL, or a build source name). The source picks the boilerplate lines learned
for that site (without it, those learned for any source are dropped), and a model that reads dates reads one
only for a source whose dates it learned (`dates_for_model`): otherwise, and without a date, it predicts from
the content alone.
Output: a DataFrame with `topic`, `topic_score`, `stance`, `stance_score`, and `topic_proba_<label>` /
`stance_proba_<label>` per class, and `stance_evidence`: for a non-neutral stance, a JSON list of the 1-3
sentences of the article that drove it, each with its score (`[]` for `neutre`; null for a model without an
evidence scorer), and `input_words`: the words left after cleaning. A model without a stance head returns null
stance columns. A row with no words left after cleaning (site furniture only) is refused, never predicted; a row
shorter than `MIN_WORDS` words is predicted, and callers can filter on `input_words`.

The model applies `prepare_text` — `cleaning.model_text`, the data build's own text assembly, which travels with
the logged model — so a raw scraped page and its cleaned version get the same answer, and the model reads at
serving time the text it was trained on.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import math
import re

import numpy as np
import pandas as pd

from training.data.cleaning import BoilerplateModel, model_text, replace_surrogates, split_title
from training.data.schema import TASKS, source_key
from training.errors import InvalidInput

MAX_TEXT_CHARS = 200_000  # ~100x a long news article; larger inputs are refused, not truncated silently
MAX_ROWS = 5_000


def prepare_text(text: str, title: str | None = None, boilerplate: BoilerplateModel | None = None,
                 source: str | None = None) -> str:
    """Raw article -> the model's input text (`cleaning.model_text`, the data build's own assembly): the title is
    the `title` column, or else the first line of `text`. `source` picks the boilerplate learned for that site;
    without it (or for a site the build never saw) the lines learned for any source are dropped. Lone
    surrogates become U+FFFD first, as the file readers do (`cleaning.replace_surrogates`)."""
    text = replace_surrogates(text)
    title = replace_surrogates(title) if isinstance(title, str) else title
    source = replace_surrogates(source) if isinstance(source, str) else source
    if title is None or not str(title).strip():
        title, text = split_title(text)
    return model_text(str(title), text, source=source, boilerplate=boilerplate)


MIN_WORDS = 20  # below this many words after cleaning, predictions are made but unreliable: filter on `input_words`
_LETTER = r"[^\W\d_]"
_WORD = re.compile(_LETTER + "+")


@functools.cache
def char_table(char_class: str) -> np.ndarray:
    """Per code point: whether a regex character class (`r"\\w"`, `r"[^\\W\\d_]"`) matches it in a str pattern, as
    the regex engine itself finds; computed once a process per class (0.1-0.3 s)."""
    table = np.zeros(0x110000, dtype=bool)
    table[[m.start() for m in re.finditer(char_class, "".join(map(chr, range(0x110000))))]] = True
    return table


def code_points(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The texts joined by NUL (no letter, no word character: no run spans two texts) as code points, and where
    each text starts. Lone surrogates pass through as their code points."""
    sizes = np.fromiter(map(len, texts), np.int64, len(texts)) + 1
    joined = "\0".join(texts)
    return (np.frombuffer(joined.encode("utf-32-le", "surrogatepass"), dtype=np.uint32),
            np.cumsum(sizes) - sizes)


def count_words(texts: list[str]) -> list[int]:
    """`article_words` of each text: the runs of letters (`_WORD`) counted over the batch's code points at once (a
    regex findall was ~200 µs an article; tests/test_cleaning.py checks the counts against it over any code point)."""
    chars, starts = code_points(texts)
    letter = np.take(char_table(_LETTER), chars).view(np.int8)  # take: faster than fancy indexing
    runs = np.flatnonzero(np.diff(letter, prepend=np.int8(0)) == 1)
    return np.bincount(np.searchsorted(starts, runs, side="right") - 1, minlength=len(texts)).tolist()


def article_words(text: str) -> int:
    """The words (runs of letters, `_WORD`) of a model input text: what `input_words` reports and what must be > 0."""
    return count_words([text])[0]


def text_problem(text) -> str | None:
    """Why a raw `text` value cannot be an article (checked before cleaning), or None."""
    if not isinstance(text, str):
        return f"'text' must be a string, got {type(text).__name__}"
    if not text.strip():
        return "'text' is empty"
    if len(text) > MAX_TEXT_CHARS:
        return f"'text' is {len(text)} characters, more than the {MAX_TEXT_CHARS} accepted"
    return None


def validate_input(df) -> pd.DataFrame:
    if isinstance(df, dict):
        df = pd.DataFrame(df)
    if not isinstance(df, pd.DataFrame):
        raise InvalidInput(f"expected a table with a 'text' column, got {type(df).__name__}")
    if "text" not in df.columns:
        raise InvalidInput("missing required column 'text' (the raw article, title on the first line)")
    if len(df) == 0:
        raise InvalidInput("no rows to predict")
    if len(df) > MAX_ROWS:
        raise InvalidInput(f"too many rows in one request: {len(df)} > {MAX_ROWS}; split the batch")
    for i, t in enumerate(df["text"]):
        if problem := text_problem(t):
            raise InvalidInput(f"row {i}: {problem}")
    for column in ("title", "source"):
        if column in df.columns:
            for i, t in enumerate(df[column]):
                if not _missing(t) and not isinstance(t, str):
                    raise InvalidInput(f"row {i}: '{column}' must be a string or null")
    return df


def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or (isinstance(v, str) and not v.strip())


def iso_date(v) -> str | None:
    """'YYYY-MM-DD' (a datetime's date part too) -> 'YYYY-MM-DD'; anything else -> None."""
    try:
        return dt.date.fromisoformat(v.strip()[:10]).isoformat() if isinstance(v, str) else None
    except ValueError:
        return None


def input_dates(df: pd.DataFrame) -> list[str | None]:
    """The frame's publication dates as 'YYYY-MM-DD', None where absent; InvalidInput naming the first row whose
    date is neither."""
    if "date" not in df.columns:
        return [None] * len(df)
    dates = []
    for i, d in enumerate(df["date"]):
        iso = None if _missing(d) else iso_date(d)
        if iso is None and not _missing(d):
            raise InvalidInput(f"row {i}: 'date' must be an ISO date YYYY-MM-DD or null, got {str(d)[:40]!r}")
        dates.append(iso)
    return dates


def dates_for_model(dates: list[str | None], sources: list, dated_sources) -> list[str | None]:
    """The dates a model may read: a row's date only when its `source` is one whose dates the model learned
    (`meta.json` `dated_sources`, compared by `schema.source_key`); None for any other source or none. What a
    month means (which sections a site had then) is one publisher's history: for everyone else the prediction
    comes from the content alone, as for an undated article."""
    known = set(dated_sources or ())
    return [d if d is not None and source_key(s) in known else None for d, s in zip(dates, sources)]


def prepare_frame(df, boilerplate: BoilerplateModel | None = None, dated_sources=()) -> tuple[list[str], list[str | None]]:
    """A request -> (model input texts, the publication dates the model may read: `dates_for_model`), or
    InvalidInput naming the row and column."""
    df = validate_input(df)
    titles, sources = (df[c].tolist() if c in df.columns else [None] * len(df) for c in ("title", "source"))
    dates = dates_for_model(input_dates(df), sources, dated_sources)
    texts = [prepare_text(t, ti if isinstance(ti, str) else None, boilerplate, so if isinstance(so, str) and so else None)
             for t, ti, so in zip(df["text"], titles, sources)]
    for i, t in enumerate(texts):
        if not _WORD.search(t):  # no word at all (`article_words` would be 0); `format_output` counts them once
            raise InvalidInput(f"row {i}: no words of an article are left after cleaning (site furniture only?)")
    return texts, dates


def format_output(probas: dict[str, tuple[list[str], np.ndarray] | None], texts: list[str], all_labels: dict[str, list[str]],
                  evidence: list[list[dict]] | None = None) -> pd.DataFrame:
    """probas: task -> (labels, [n, k] probabilities), or None for a task the model has no head for.
    evidence: per row, the sentences behind the stance decision ({"sentence", "score"}), as the
    `stance_evidence` column (a JSON list; null when the model has no evidence scorer).
    texts: the model input texts, whose word counts are the `input_words` column."""
    n = len(texts)
    out: dict[str, object] = {}
    for task in TASKS:
        labels = all_labels.get(task, [])
        got = probas.get(task)
        if got is None:
            out[task] = [None] * n
            out[f"{task}_score"] = [None] * n
            for lab in labels:
                out[f"{task}_proba_{lab}"] = [None] * n
            continue
        labs, p = got
        best = p.argmax(axis=1)
        out[task] = [labs[j] for j in best]
        out[f"{task}_score"] = p[np.arange(n), best].astype(float)
        for j, lab in enumerate(labs):
            out[f"{task}_proba_{lab}"] = p[:, j].astype(float)
    out["stance_evidence"] = ([json.dumps(e, ensure_ascii=False) for e in evidence] if evidence is not None
                              else [None] * n)
    out["input_words"] = count_words(texts)
    return pd.DataFrame(out)


def output_columns(all_labels: dict[str, list[str]]) -> list[tuple[str, str]]:
    cols = []
    for task in TASKS:
        cols += [(task, "string"), (f"{task}_score", "double")]
        cols += [(f"{task}_proba_{lab}", "double") for lab in all_labels.get(task, [])]
    return cols + [("stance_evidence", "string"), ("input_words", "long")]


# (name, type, required): the served input columns, as the logged model's signature declares them
INPUT_COLUMNS = [("text", "string", True), ("title", "string", False), ("date", "string", False),
                 ("source", "string", False)]


INPUT_EXAMPLE = pd.DataFrame({
    "text": ["L'Iran et la Russie renforcent leur partenariat contre l'Occident\n"
             "Moscou et Téhéran renforceront leur partenariat en matière de sécurité."],
    "date": ["2020-06-15"],
})
