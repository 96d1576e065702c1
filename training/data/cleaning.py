"""Text cleaning shared by the data build and the served model.

Three kinds of rules, applied in order:
1. character normalisation (Unicode NFC, typographic apostrophes and spaces, control characters);
2. boilerplate lines: generic web furniture (ads, comment forms, "related articles" trailers), and lines that
   recur across many documents of one source, learned from the corpus (as C4 / Gopher-style web pipelines do);
3. repair of sentences glued by the scraper ("jeudi.Le gouvernement" -> "jeudi. Le gouvernement"), leaving
   numbers, abbreviations and URLs alone.

Every function here is pure and idempotent: clean(clean(x)) == clean(x).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

_APOSTROPHES = ("\u2019", "\u2018", "\u02bc", "\u2032", "`")
_SPACES = re.compile(r"[\u00a0\u2007\u202f\u2009\u200a\u3000\t\f\v]")
_CONTROL = re.compile(r"[\u0000-\u0008\u000b\u000e-\u001f\u007f-\u009f\u200b-\u200d\ufeff\ufffd]")
_MULTISPACE = re.compile(r" {2,}")
_SURROGATE = re.compile("[\ud800-\udfff]")

# Generic web furniture: lines that are a site's template wherever they appear, on a site seen once as on the
# corpus's own (the learned per-source boilerplate below cannot know a new site's template). French first, with
# the English of common CMS themes. Each rule matches a WHOLE line (after whitespace is squeezed), so a sentence
# of the article that starts with the same words ("Partager le pouvoir...", "Par ailleurs, ...") stays. Every
# rule has real phrasings in tests/test_cleaning.py.
FURNITURE_RULES: dict[str, str] = {
    # ads and sponsored blocks
    "ad": r"ads?|advertisement|-\ ?advertisement\ ?-|publicit[ée]|sponsoris[ée]|contenu\ sponsoris[ée]|"
          r"article\ sponsoris[ée]|partenariat|en\ partenariat\ avec\ .{1,60}",
    # comment forms
    "comments": r"leave\ a\ reply|laisser\ un\ commentaire|laissez\ un\ commentaire|"
                r"please\ enter\ your\ (?:comment|name\ here|email\ address\ here)!?|"
                r"you\ have\ entered\ an\ incorrect\ email\ address!?|save\ my\ name,?\ email.*|"
                r"r[ée]agir|r[ée]agissez|commenter|\d+\ commentaires?|voir\ les\ commentaires",
    # share / save / print buttons, "follow us" prompts
    "share": r"(?:partager|partagez|share)(?:\ (?:sur|on)\ \w+|\ (?:cet|l')\ ?article)?|tweet|tweeter|imprimer|"
             r"copier\ le\ lien|lien\ copi[ée]|envoyer\ par\ (?:e-?mail|courriel)|ajouter\ [àa]\ mes\ favoris|"
             r"(?:(?:facebook|twitter|x|linkedin|whatsapp|messenger|pinterest|e-?mail|flipboard)[\ ,|/]*){2,}|"
             r"suivez(?:-nous)?\ (?:sur|toute\ l'actualit[ée]).{0,80}|[ée]couter\ (?:cet\ )?article|"
             r"[ée]couter",
    # teasers for other articles: "Lire aussi : <another headline>", "À voir aussi >> ..."
    "teaser": r"(?:[àa]\ )?(?:lire|voir|d[ée]couvrir)\ (?:aussi|[ée]galement|la\ suite)\ ?(?:[:>»|–—-].*)?|"
              r"(?:→|>>|►|▶|»)\ ?(?:[àa]\ )?(?:lire|voir)\b.*|\(?(?:[àa]\ )?lire\ aussi\ ?:.*\)?|"
              r"lire\ l'article|lire\ la\ suite",
    # media labels standing alone on a line
    "media": r"(?:en\ )?vid[ée]os?\ ?:?|en\ images|photos?|diaporama|infographie|en\ direct|replay",
    # photo credits: "Photo : AFP", "© Reuters", "Crédit photo : Jean Dupont / Le Monde", "(Photo by X/AFP)"
    "credit": r"\(?(?:photos?|cr[ée]dits?(?:\ photos?)?|illustration|image|photo\ d'illustration)\ ?(?:by\ |:|/|©)"
              r"[^.!?]{0,100}|\(?(?:©|\(c\)|copyright)\ ?[^.!?]{1,80}|photo\ d'illustration\.?",
    # newsletter and subscription prompts, paywall notices
    "newsletter": r"abonnez-vous.*|inscrivez-vous\ [àa]\ (?:notre|la|nos)\ newsletters?.*|newsletters?|"
                  r"recevez\ (?:notre|nos|chaque|gratuitement).{0,100}|je\ m'abonne|s'abonner|s'inscrire|"
                  r"d[ée]j[àa]\ abonn[ée]\ ?\??.{0,40}|cet\ article\ est\ r[ée]serv[ée]\ aux\ abonn[ée]s.*|"
                  r"(?:la\ suite\ est|article)\ r[ée]serv[ée]e?\ aux\ abonn[ée]s.*|"
                  r"il\ vous\ reste\ \d+\ ?%\ de\ cet\ article\ [àa]\ lire.*",
    # time stamps and reading times (a byline with a name is `_SIGNATURE`)
    "timestamp": r"(?:publi[ée]|mis\ [àa]\ jour|modifi[ée]|actualis[ée])\ le\ [\w/.: -]{4,40}(?:\ ?[|,-]\ ?"
                 r"(?:mis\ [àa]\ jour|modifi[ée]|actualis[ée])\ le\ [\w/.: -]{4,40})?|"
                 r"(?:temps\ de\ )?lecture\ ?:?\ \d+\ ?min(?:utes?)?\.?",
    # cookie banners
    "cookies": r"accepter\ les\ cookies|tout\ accepter|nous\ utilisons\ des\ cookies.*|g[ée]rer\ mes\ cookies",
}
_FURNITURE = re.compile("^(?:" + "|".join(f"(?:{rx})" for rx in FURNITURE_RULES.values()) + r")\s*$", re.IGNORECASE)
# a byline: "Par" and one to four capitalised words (a name), "Par Jean Dupont, avec AFP"; "Par ailleurs, ..." is not
_SIGNATURE = re.compile(r"^(?i:par)\ (?:[A-ZÀ-ÖØ-Þ][\w'.-]+\ ?){1,4}(?i:,\ (?:avec\ )?(?:afp|reuters|ap))?\s*$")


def is_furniture(line: str) -> bool:
    """A whole line that is generic web furniture (`FURNITURE_RULES`, or a byline)."""
    return bool(_FURNITURE.match(line) or _SIGNATURE.match(line))


# Headings after which the rest of a scraped page is navigation, comments or teasers, never the article. Only a
# whole line that is such a heading counts: "Sur le même sujet, les députés ont voté..." is a sentence of the article.
_TRAILER = re.compile(
    r"^(?:articles?\ li[ée]s|derniers\ articles|leave\ a\ reply|laisser\ un\ commentaire|"
    r"[àa]\ lire\ [ée]galement|sur\ le\ m[êe]me\ (?:sujet|th[èe]me)|commentaires?\s*\(\d*\)|related\ (?:posts|articles)|"
    r"les\ plus\ (?:lus|partag[ée]s|comment[ée]s)|dans\ la\ m[êe]me\ rubrique|vous\ aimerez\ aussi|"
    r"(?:ces\ articles|cet\ article)\ (?:peuvent|peut)\ vous\ int[ée]resser|la\ r[ée]daction\ vous\ conseille|"
    r"nos\ derni[èe]res\ vid[ée]os|[àa]\ d[ée]couvrir\ (?:aussi|[ée]galement)|recommand[ée]s?\ pour\ vous)"
    r"\s*[:.]?$",
    re.IGNORECASE | re.VERBOSE,
)

# A sentence end glued to the next sentence: lowercase letter, digit or closing mark, then . ! ? or …,
# then an uppercase letter or an opening quote. An uppercase letter before the dot (M.Dupont, U.S.A) is left.
# Written to start with the punctuation, not the lookbehind: `re` then skips to the next . ! ? … in C instead of
# trying the whole pattern at every position (5x faster on an article; the same matches).
_GLUED = re.compile(r"([.!?…](?<=[a-zà-öø-ÿœ0-9%)\]»\"”][.!?…])[.!?…]*)(?=[A-ZÀ-ÖØ-ÞŒ«“\"])")
# A whitespace-delimited token that is a URL, a domain name or an e-mail address: never split.
_URL_TOKEN = re.compile(r"(?:https?://|www\.|\S@\S)|\.(?:fr|com|org|net|eu|io)\b")


def replace_surrogates(text: str) -> str:
    """Lone surrogates (a JSON `"\\ud800"` escape reads as one; they have no UTF-8) -> U+FFFD, which cleaning
    drops. Applied to every string a reader or the served model takes, before anything encodes it."""
    return _SURROGATE.sub("\ufffd", text) if _SURROGATE.search(text) else text


def normalize_chars(text: str) -> str:
    text = unicodedata.normalize("NFC", text)
    for a in _APOSTROPHES:
        if a in text:
            text = text.replace(a, "'")
    # every character the steps below change is non-printable (Cc, Cf, Zs, Zl, Zp) but U+FFFD: a text printable
    # apart from its line breaks has none, and skips two regex scans
    if "\ufffd" not in text and text.replace("\n", "").isprintable():
        return text
    text = _CONTROL.sub("", text)
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\u2028", "\n").replace("\u2029", "\n")
    text = _SPACES.sub(" ", text)
    return text


def repair_glued_sentences(text: str) -> str:
    """Insert the missing space in "jeudi.Le", leaving URLs, domains and e-mail addresses untouched."""
    if not any(p in text for p in ".!?…"):
        return text
    parts = _GLUED.split(text)  # text, glued end, text, glued end, ..., text
    url = {}  # token start -> whether the token is a URL: one search a token (a long line without spaces and
    # with many glued ends was quadratic)
    at = 0
    for i in range(1, len(parts), 2):
        at += len(parts[i - 1])
        start = text.rfind(" ", 0, at) + 1
        if start not in url:
            end = text.find(" ", at)
            url[start] = bool(_URL_TOKEN.search(text[start : end if end >= 0 else len(text)]))
        at += len(parts[i])
        if not url[start]:
            parts[i] += " "
    return "".join(parts)


def line_key(line: str) -> str:
    """A normalised line, for counting recurrences across documents."""
    line = line.lower()
    # a printable line holds no white space but " " (checked over every code point in tests/test_cleaning.py):
    # then split/join only squeezes and strips spaces, and a cleaned line has nothing to squeeze or strip
    if not (line.isprintable() and "  " not in line and line[:1] != " " and line[-1:] != " "):
        line = " ".join(line.split())
    return hashlib.blake2b(line.encode(), digest_size=8).hexdigest()


@dataclass
class BoilerplateModel:
    """Lines learned as boilerplate for each source (fit on a corpus, carried by the served model)."""

    min_docs: int = 5
    min_fraction: float = 0.02
    lines: dict[str, set[str]] = field(default_factory=dict)  # source -> {line_key}
    sources: set[str] = field(default_factory=set)  # every source the model was fitted on, with or without lines
    _any: frozenset | None = field(default=None, init=False, repr=False, compare=False)  # keys_for(unknown)

    def fit(self, docs: Iterable[tuple[str, str]]) -> BoilerplateModel:
        """docs: (source, raw body) pairs. A line is boilerplate for a source when it recurs in many of its
        documents: at least `min_docs` and at least `min_fraction` of them."""
        counts: dict[str, Counter] = {}
        totals: Counter = Counter()
        for source, body in docs:
            totals[source] += 1
            keys = {line_key(ln) for ln in normalize_chars(body).split("\n") if ln.strip()}
            counts.setdefault(source, Counter()).update(keys)
        self.lines = {}
        self._any = None
        self.sources = set(totals)
        for source, counter in counts.items():
            threshold = max(self.min_docs, self.min_fraction * totals[source])
            recurring = {k for k, c in counter.items() if c >= threshold}
            if recurring:
                self.lines[source] = recurring
        return self

    def keys_for(self, source: str | None) -> set[str]:
        """The lines learned for `source` when the model was fitted on that source; for an unknown source (None, or
        a site the build never saw), the lines learned for any source: such an article may come from any of them."""
        if source in self.sources:
            return self.lines.get(source, set())
        if self._any is None:  # asked for every served article without a known source: computed once
            self._any = frozenset().union(*self.lines.values())
        return self._any

    def is_boilerplate(self, source: str | None, line: str) -> bool:
        return line_key(line) in self.keys_for(source)

    def to_json(self) -> dict:
        return {
            "min_docs": self.min_docs,
            "min_fraction": self.min_fraction,
            "lines": {s: sorted(v) for s, v in sorted(self.lines.items())},
            "sources": sorted(self.sources),
        }

    @classmethod
    def from_json(cls, d: dict) -> BoilerplateModel:
        lines = {s: set(v) for s, v in d["lines"].items()}
        return cls(d["min_docs"], d["min_fraction"], lines, set(d.get("sources", lines)))


def clean_body(text: str, source: str | None = None, boilerplate: BoilerplateModel | None = None) -> str:
    """Clean an article body: furniture and recurring lines out, glued sentences repaired, paragraphs kept."""
    learned = boilerplate.keys_for(source) if boilerplate else set()
    paragraphs = []
    for raw in normalize_chars(text).split("\n"):
        line = (_MULTISPACE.sub(" ", raw) if "  " in raw else raw).strip()
        if not line:
            continue
        line = repair_glued_sentences(line)  # the rules read repaired lines, so a second pass finds nothing new
        if _TRAILER.match(line):
            break
        if is_furniture(line):
            continue
        if learned and line_key(line) in learned:
            continue
        paragraphs.append(line)
    return "\n".join(paragraphs)


def clean_title(text: str) -> str:
    return " ".join(repair_glued_sentences(normalize_chars(text)).split())


# A sentence ends at . ! ? … (or a closing quote after one) followed by a space and an uppercase letter, a digit or
# an opening quote; "M. Dupont" and "U.S.A." are left whole (an uppercase letter before the dot). The match is the
# end mark and the white space after it: starting with the mark, not a lookbehind, lets `re` skip to the next mark
# in C (the same ends as lookbehind + \s+, 3x faster).
_SENTENCE_END = re.compile(r"[.!?…](?<=[a-zà-öø-ÿœ0-9%)\]»\"”][.!?…])\s+(?=[«\"“A-ZÀ-ÖØ-ÞŒ0-9])"
                           r"|[»\"”](?<=[.!?…][»\"”])\s+(?=[«\"“A-ZÀ-ÖØ-ÞŒ])")


def sentences(text: str) -> list[tuple[int, str]]:
    """A model input text's sentences as (line number, sentence): line 0 is the title, line 1 the lead (in the
    build's texts), the rest the body's paragraphs. Sentences never span lines."""
    out = []
    for i, line in enumerate(text.split("\n")):
        at = 0
        for m in _SENTENCE_END.finditer(line):
            if s := line[at : m.start() + 1].strip():  # the sentence keeps its end mark
                out.append((i, s))
            at = m.end()
        if s := line[at:].strip():
            out.append((i, s))
    return out


def split_title(text: str) -> tuple[str, str]:
    """A raw article as one text -> (its first non-empty line that is not furniture, the rest): the
    title-on-line-one convention of `.txt` files and of the served `text` column."""
    lines = normalize_chars(text).split("\n")
    # site furniture above the headline ("Publicité", "Partager") is not the title
    first = next((i for i, ln in enumerate(lines) if ln.strip() and not is_furniture(_MULTISPACE.sub(" ", ln).strip())), None)
    if first is None:
        return "", ""
    return lines[first], "\n".join(lines[first + 1 :])


def model_text(title: str, body: str, lead: str = "", source: str | None = None,
               boilerplate: BoilerplateModel | None = None) -> str:
    """The text a model reads, from an article's parts: the cleaned title on the first line, then the lead and
    the body cleaned line by line as one (furniture, trailers and `source`'s learned boilerplate out). The data
    build and the served model both call this, so training and serving read the same text. Idempotent."""
    body = clean_body("\n".join(p for p in (lead, body) if p), source, boilerplate)
    return "\n".join(p for p in (clean_title(title), body) if p)


def normalize_many(texts: list[str]) -> list[str]:
    """Dedup keys for many texts at once: NFKD, lowercase, accents dropped, every run of characters that are
    not letters or digits turned into one space. Equal keys mean the same text up to case, accents,
    punctuation and spacing. Vectorised with Arrow (C++), since the data build keys ~70 MB of text."""
    import pyarrow as pa
    import pyarrow.compute as pc

    x = pc.utf8_normalize(pa.array(texts, type=pa.large_string()), form="NFKD")
    x = pc.replace_substring_regex(pc.utf8_lower(x), r"\p{Mn}+", "")
    x = pc.utf8_trim_whitespace(pc.replace_substring_regex(x, r"[^\p{L}\p{N}]+", " "))
    return x.to_pylist()


def normalize_for_dedup(text: str) -> str:
    return normalize_many([text])[0]
