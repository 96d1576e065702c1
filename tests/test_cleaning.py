"""Cleaning rules: web furniture out, recurring lines out, glued sentences repaired without breaking numbers,
abbreviations or URLs; every function idempotent (property-based)."""

from hypothesis import given, settings
from hypothesis import strategies as st

from training.data.cleaning import (
    BoilerplateModel,
    clean_body,
    clean_title,
    model_text,
    normalize_chars,
    normalize_for_dedup,
    repair_glued_sentences,
)
from training.models.contract import prepare_text


def test_glued_sentences_are_repaired():
    assert repair_glued_sentences("dans la nuit de mercredi à jeudi.Le gouvernement") == "dans la nuit de mercredi à jeudi. Le gouvernement"
    assert repair_glued_sentences('réunion le 24 juin.Une seconde') == "réunion le 24 juin. Une seconde"
    assert repair_glued_sentences("insuffisante\".\"Malgré") == 'insuffisante". "Malgré'
    assert repair_glued_sentences("Vraiment?Oui") == "Vraiment? Oui"


def test_numbers_abbreviations_and_urls_survive():
    for text in ("un taux de 3.5% en 2020", "M.Dupont et U.S.A", "voir www.Orange.fr pour plus",
                 "https://actu.orange.fr/France/Article.html", "écrire à contact@Orange.Fr", "le site lemonde.fr.Il",
                 "1.000.000 euros", "version 2.3.1"):
        assert repair_glued_sentences(text) == text


def test_furniture_and_trailers_are_removed():
    raw = "Premier paragraphe.\nad\n- Advertisement -\nDeuxième paragraphe.\nPartager\nArticles Liés\nAutre titre\nLEAVE A REPLY"
    assert clean_body(raw) == "Premier paragraphe.\nDeuxième paragraphe."


def test_normalisation_of_characters():
    assert normalize_chars("l\u2019Occident\u00a0!\u200b") == "l'Occident !"
    assert clean_title("  L\u2019Iran\u202fet   la Russie ") == "L'Iran et la Russie"


def test_recurring_lines_are_learned_per_source():
    docs = [("site", f"Article {i} unique.\nAbonnez-vous à notre lettre hebdo\nSuivez-nous sur Mastodon") for i in range(10)]
    docs += [("other", "Suivez-nous sur Mastodon\nTexte")]
    model = BoilerplateModel(min_docs=5, min_fraction=0.2).fit(docs)
    assert clean_body(docs[0][1], "site", model) == "Article 0 unique."
    # the same line is not boilerplate for a source where it does not recur
    assert "Mastodon" in clean_body(docs[-1][1], "other", model)
    restored = BoilerplateModel.from_json(model.to_json())
    assert restored.lines == model.lines


def test_dedup_normalisation_folds_case_accents_and_punctuation():
    assert normalize_for_dedup("L'Été, À Paris !") == normalize_for_dedup("l ete a paris")
    assert normalize_for_dedup("Москва") == "москва"  # non-Latin letters are kept, not dropped


def test_raw_and_cleaned_seed_prepare_the_same(seed_text=None):
    from tests.conftest import SEED

    raw = SEED.read_text(encoding="utf-8")
    once = prepare_text(raw)
    assert prepare_text(once) == once
    assert once.startswith("L'Iran et la Russie renforcent leur partenariat contre l'Occident\nMoscou et Téhéran")
    assert "LEAVE A REPLY" not in once and "Advertisement" not in once


text_strategy = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=400)


@settings(max_examples=300, deadline=None)
@given(text_strategy)
def test_cleaning_is_total_and_idempotent(text):
    body = clean_body(text)
    assert clean_body(body) == body
    title = clean_title(text)
    assert clean_title(title) == title
    assert repair_glued_sentences(repair_glued_sentences(text)) == repair_glued_sentences(text)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="abcAB.?! \n'\"«»0123456789é", max_size=200))
def test_repair_on_punctuation_heavy_text_is_idempotent(text):
    once = prepare_text(text) if text.strip() else ""
    assert (prepare_text(once) if once.strip() else "") == once


def test_served_text_uses_its_source_lines_when_known_and_every_source_lines_otherwise():
    docs = [("site", f"Texte {i}.\nSuivez-nous sur Mastodon") for i in range(4)] + [("quiet", "Un autre texte.")]
    model = BoilerplateModel(min_docs=2, min_fraction=0.1).fit(docs)
    raw = "Titre\nUn paragraphe.\nSuivez-nous sur Mastodon"
    # no source, or a site the build never saw: the lines learned for any source go
    assert prepare_text(raw, boilerplate=model) == "Titre\nUn paragraphe."
    assert prepare_text(raw, boilerplate=model, source="elsewhere.fr") == "Titre\nUn paragraphe."
    assert prepare_text(raw, boilerplate=model, source="site") == "Titre\nUn paragraphe."
    # a source the build saw, where that line never recurred: the line is the article's own, it stays
    assert prepare_text(raw, boilerplate=model, source="quiet").endswith("Mastodon")
    assert clean_body("Un paragraphe.\nSuivez-nous sur Mastodon", "quiet", model).endswith("Mastodon")


def test_a_lead_that_opens_with_a_trailer_phrase_is_kept():
    """Divergence 1 of the redesign: "Sur le même sujet, ..." as a sentence is the article, not a trailer heading."""
    lead = "Sur le même sujet, les députés ont voté la loi jeudi soir."
    text = model_text("Un titre", "Le texte de l'article.", lead=lead)
    assert text == f"Un titre\n{lead}\nLe texte de l'article."
    assert prepare_text(f"Un titre\n{lead}\nLe texte de l'article.") == text
    # the heading alone still ends the article
    assert clean_body("Le texte.\nSur le même sujet\nUn autre article") == "Le texte."
    assert clean_body("Le texte.\nSur le même sujet :\nUn autre article") == "Le texte."


def test_a_lead_of_several_lines_keeps_its_lines_in_build_and_serving():
    """Divergence 2 of the redesign: the build flattened a multi-line lead, serving kept its lines."""
    from training.data.readers import article_from_record

    rec = {"id": "1", "title": "Un titre", "abstract": "Première ligne du chapeau.\nSeconde ligne du chapeau.",
           "text": "Le corps de l'article."}
    a = article_from_record(rec, source="site")
    built = model_text(a.title, a.body, lead=a.abstract)
    assert built == "Un titre\nPremière ligne du chapeau.\nSeconde ligne du chapeau.\nLe corps de l'article."
    assert prepare_text(f"{rec['title']}\n{rec['abstract']}\n{rec['text']}") == built
