"""The documented pre-filter for the stance annotation pool.

It does not label anything: it decides which articles are worth a human reading, and in which order. An
article enters the pre-filtered stratum when any of these holds:
- it names the West as such or its core vocabulary ("Occident", "OTAN", "impérialisme", "ingérence");
- it is in the `monde` section, names a Western actor, and names an adversary of the West or uses a word of the
  stance vocabulary ("sanctions", "dénonce", "ingérence", "alliés" ...);
- in any section, it names Western actors and adversaries at least twice each and uses stance vocabulary.
Its score orders reading: the West named as such counts most, then stance vocabulary, then the co-occurrence of
Western actors and adversaries, then their presence in the title or lead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from training.data.article import Article

PREFILTER_VERSION = "1"


def _rx(words: list[str]) -> re.Pattern:
    return re.compile(r"\b(?:" + "|".join(words) + r")", re.IGNORECASE)


# The West as such, its institutions and leading powers acting abroad.
WEST = _rx([
    r"occident", r"otan\b", r"nato\b", r"alliance atlantique", r"\bg7\b", r"\bg8\b", r"union européenne",
    r"\bue\b", r"bruxelles", r"washington", r"maison[- ]blanche", r"pentagone", r"états?[- ]unis", r"etats?[- ]unis",
    r"américain", r"\bamérique\b", r"trump", r"obama", r"biden", r"londres", r"britanni", r"royaume[- ]uni",
    r"berlin", r"allemagne", r"merkel", r"macron", r"hollande", r"sarkozy", r"le drian", r"fabius", r"quai d'orsay",
    r"élysée", r"armée française", r"soldats français", r"barkhane", r"serval", r"coalition internationale",
])
ADVERSARY = _rx([
    r"russ", r"moscou", r"kremlin", r"poutine", r"lavrov", r"chin(?:e|ois)", r"pékin", r"xi jinping", r"iran",
    r"téhéran", r"rohani", r"khamenei", r"corée du nord", r"nord[- ]coréen", r"pyongyang", r"kim jong",
    r"venezuela", r"maduro", r"chavez", r"cuba", r"castro", r"syri", r"damas", r"assad", r"turquie", r"turc",
    r"erdogan", r"hezbollah", r"hamas", r"taliban", r"jihadist", r"djihadist", r"etat islamique", r"état islamique",
    r"al[- ]qaïda", r"junte", r"sahel", r"\bmali\b", r"malien", r"niger\b", r"burkina", r"centrafri", r"wagner",
    r"bolivie", r"morales", r"nicaragua", r"ortega", r"kadhafi", r"libye", r"biélorussie", r"loukachenko",
    r"irak", r"afghan", r"palestin", r"houthi", r"algéri", r"bouteflika", r"rwanda", r"kagame",
])
# Words that often carry a position toward the West (either way).
STANCE_WORDS = _rx([
    r"occident", r"impériali", r"ingérence", r"néo-?coloni", r"coloniali", r"hégémon", r"anti-?améric",
    r"anti-?occident", r"anti-?français", r"anti-?france", r"françafrique", r"diktat", r"sanction", r"embargo",
    r"dénonc", r"condamn", r"hostil", r"provocation", r"agression", r"ennemi", r"arrogan", r"humiliat",
    r"complot", r"expuls", r"boycott", r"manifest[a-z]* (?:contre|devant) l'ambassade", r"drapeau[x]? (?:américain|français)",
    r"monde libre", r"valeurs occidentales", r"adhésion", r"candidature à l'(?:ue|union|otan)", r"rejoindre l'(?:otan|ue|union)",
    r"remerci", r"gratitude", r"solidarité", r"alliés?", r"partenariat stratégique", r"mort à l'amérique",
])
WEST_AS_SUCH = re.compile(r"occident|\botan\b|impériali|ingérence", re.IGNORECASE)
FOREIGN_SECTIONS = {"monde"}


@dataclass(frozen=True)
class PrefilterResult:
    selected: bool
    score: float
    west_hits: int
    adversary_hits: int
    stance_hits: int


def prefilter(article: Article) -> PrefilterResult:
    head = f"{article.title}\n{article.abstract}"
    text = article.text
    west = len(WEST.findall(text))
    adversary = len(ADVERSARY.findall(text))
    stance = len(STANCE_WORDS.findall(text))
    west_as_such = bool(WEST_AS_SUCH.search(text))
    selected = (
        west_as_such
        or (article.section in FOREIGN_SECTIONS and west > 0 and (adversary > 0 or stance > 0))
        or (west >= 2 and adversary >= 2 and stance > 0)
    )
    score = (
        2.0 * min(stance, 10)
        + 1.0 * min(west, 10) * (adversary > 0)
        + 0.5 * min(adversary, 10)
        + 4.0 * bool(STANCE_WORDS.search(head))
        + 3.0 * bool(WEST.search(head)) * bool(ADVERSARY.search(head))
        + 6.0 * west_as_such
    )
    return PrefilterResult(selected, round(score, 2) if selected else 0.0, west, adversary, stance)
