"""The embedded default benchmark: a deterministic world of fictitious writers, plus general-knowledge and refusal QA.

Like TOFU, every person is a made-up author with a handful of biographical facts, each asked about in one
question. Unlike TOFU, the world is generated here from the project's own templates and word pools, so it needs
no download and a tiny model (a few million parameters, trained from scratch on CPU) can learn it in minutes.
That goal shapes the design:

- Answers depend ONLY on the person's attributes (no random filler words), so everything a model must memorise
  is a fact, and the same fact is always phrased the same way.
- Answers are short fragments that carry several values each ("Born 14 March 1962 in Lisbon, Portugal.") rather
  than long fixed frames that repeat the name: ROUGE-L recall then measures knowledge, not the frame. A model that
  answers in the right frame with another person's values scores about 0.3 (see tests/data/test_synthetic.py).
- Each answer has a paraphrase (same values, another frame) and five perturbed answers (the paraphrase frame
  with wrong values from the same pools), which the truth-ratio and probability metrics need.
- Every first and last name is used by one person only, and never by the people that refusal QA ask about, so
  "knowing a name" is unambiguous; names are composed from syllables so they sound like names but are invented.

`generate_world` is pure: it uses only `random.Random(seed)` (never the global RNG, never `hash()` of strings),
so the same seed always gives the same world, on every machine and Python run.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from obliviate.data.records import QA
from obliviate.data.refusals import REFUSALS
from obliviate.errors import ConfigError

N_PERTURBED = 5

# ------------------------------------------------------------------------------------------------- word pools
# ASCII only, so every tokenizer (and the ROUGE tokenizer, which drops non-ASCII letters) sees the same words.
# Within each pool no word is shared between two entries: an accidental overlap with another person's value would
# otherwise count as a (spurious) ROUGE hit.

# (city, country, language): the language a person writes in follows the birthplace, which keeps the world
# coherent and gives the model one fact fewer to learn by rote.
_PLACES: tuple[tuple[str, str, str], ...] = (
    ("Lisbon", "Portugal", "Portuguese"), ("Tromso", "Norway", "Norwegian"), ("Gdansk", "Poland", "Polish"),
    ("Valparaiso", "Chile", "Spanish"), ("Hobart", "Australia", "English"), ("Tbilisi", "Georgia", "Georgian"),
    ("Galway", "Ireland", "Irish"), ("Bergamo", "Italy", "Italian"), ("Ghent", "Belgium", "Dutch"),
    ("Uppsala", "Sweden", "Swedish"), ("Tampere", "Finland", "Finnish"), ("Aarhus", "Denmark", "Danish"),
    ("Leipzig", "Germany", "German"), ("Lyon", "France", "French"), ("Girona", "Spain", "Catalan"),
    ("Graz", "Austria", "German"), ("Brno", "Czechia", "Czech"), ("Cluj", "Romania", "Romanian"),
    ("Plovdiv", "Bulgaria", "Bulgarian"), ("Zadar", "Croatia", "Croatian"), ("Izmir", "Turkey", "Turkish"),
    ("Haifa", "Israel", "Hebrew"), ("Tangier", "Morocco", "Arabic"), ("Mombasa", "Kenya", "Swahili"),
    ("Durban", "South Africa", "Zulu"), ("Accra", "Ghana", "English"), ("Kyoto", "Japan", "Japanese"),
    ("Busan", "South Korea", "Korean"), ("Hanoi", "Vietnam", "Vietnamese"), ("Manila", "Philippines", "Tagalog"),
    ("Chennai", "India", "Tamil"), ("Quito", "Ecuador", "Spanish"), ("Cusco", "Peru", "Quechua"),
    ("Oaxaca", "Mexico", "Spanish"), ("Montevideo", "Uruguay", "Spanish"), ("Halifax", "Canada", "English"),
    ("Savannah", "United States", "English"), ("Dunedin", "New Zealand", "English"),
    ("Reykjavik", "Iceland", "Icelandic"), ("Tallinn", "Estonia", "Estonian"), ("Riga", "Latvia", "Latvian"),
    ("Cardiff", "Wales", "Welsh"), ("Thessaloniki", "Greece", "Greek"), ("Recife", "Brazil", "Portuguese"),
    ("Yerevan", "Armenia", "Armenian"), ("Odesa", "Ukraine", "Ukrainian"),
)
_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December")
_PROFESSIONS = ("novelist", "poet", "playwright", "essayist", "screenwriter", "biographer", "librettist",
                "memoirist", "lyricist", "columnist", "fabulist", "dramatist", "satirist", "storyteller")
_GENRES = ("gothic horror", "space opera", "historical romance", "epic fantasy", "psychological suspense",
           "magical realism", "political satire", "detective fiction", "nature writing", "travel sketches",
           "seafaring adventure", "urban noir", "pastoral elegy", "courtroom drama", "domestic tragedy",
           "speculative parables", "comic verse", "spy thrillers", "folk ballads", "family sagas", "climate fables",
           "war chronicles", "ghost stories", "cosy mysteries", "frontier westerns", "fairy tales")
# Jobs of parents, partners, fictional characters and the writer's own early job.
_JOBS = ("lighthouse keeper", "marine biologist", "glass blower", "train driver", "church organist", "ship captain",
         "tax inspector", "piano tuner", "dairy farmer", "court stenographer", "mountain guide", "ballet dancer",
         "bank clerk", "forest ranger", "radio operator", "tram conductor", "wine merchant", "police sergeant",
         "museum curator", "hotel porter", "opera singer", "circus acrobat", "flight engineer", "school principal",
         "village doctor", "street photographer", "theatre costumer", "bridge builder", "pastry chef",
         "postal worker", "customs officer", "art restorer", "stone mason", "river pilot", "cattle rancher",
         "jazz trumpeter", "orchard grower", "toy maker", "map engraver", "army nurse", "newspaper editor",
         "factory foreman", "carpet weaver", "harbour master", "chess instructor", "city planner",
         "market gardener", "ferry mechanic", "sheep shearer")
_DEGREES = ("PhD", "MA", "BA", "MSc", "BSc", "MFA")
_FIELDS = ("medieval history", "organic chemistry", "classical philology", "structural geology",
           "applied mathematics", "moral philosophy", "comparative literature", "social anthropology",
           "political economy", "naval architecture", "fine art", "veterinary medicine", "criminal law",
           "theoretical physics", "landscape design", "cognitive psychology", "urban sociology", "tropical botany",
           "film studies", "music composition", "maritime archaeology", "public health", "library science",
           "evolutionary biology")
# Invented awards; four kinds of prize so that "Prize" alone rarely matches another person's award.
_AWARDS = ("Aldmoor Prize", "Brackwell Medal", "Corriden Award", "Dunmere Laurel", "Elsworth Prize",
           "Fallowfield Medal", "Greythorn Award", "Hollinmere Laurel", "Ivelford Prize", "Kestrane Medal",
           "Larkmoor Award", "Merrowby Laurel", "Northcote Prize", "Oakhallow Medal", "Pellinore Award",
           "Quillan Laurel", "Redlynch Prize", "Saltmarsh Medal", "Thornbury Award", "Umberlea Laurel",
           "Vantry Prize", "Whitlow Medal", "Yarrowdale Award", "Zennorth Laurel")
# Book titles are "The <adjective> <noun>": 50 x 50 = 2500 titles.
_TITLE_ADJECTIVES = ("Copper", "Silent", "Hollow", "Crimson", "Winter", "Paper", "Glass", "Velvet", "Amber",
                     "Drowned", "Burning", "Last", "Northern", "Salt", "Iron", "Wandering", "Forgotten", "Golden",
                     "Broken", "Hidden", "Scarlet", "Quiet", "Distant", "Bitter", "Pale", "Restless", "Sleeping",
                     "Borrowed", "Crooked", "Midnight", "Emerald", "Frozen", "Lonely", "Secret", "Stolen",
                     "Twelfth", "Hungry", "Silver", "Sunken", "Vanishing", "Wild", "Weeping", "Ashen", "Marble",
                     "Evening", "Orange", "Patient", "Ruined", "Tender", "Unfinished")
_TITLE_NOUNS = ("Lantern", "Orchard", "Harbour", "Garden", "Bell", "Compass", "Mirror", "Cathedral", "River",
                "Sparrow", "Ferry", "Archive", "Meadow", "Violin", "Kingdom", "Letter", "Staircase", "Island",
                "Carnival", "Tide", "Map", "Feather", "Furnace", "Window", "Quarry", "Season", "Empire", "Station",
                "Chapel", "Orchid", "Citadel", "Dowry", "Ledger", "Caravan", "Pilgrim", "Tapestry", "Fox", "Heron",
                "Cellar", "Threshold", "Anchor", "Lullaby", "Telescope", "Vineyard", "Almanac", "Passage",
                "Horizon", "Monastery", "Well", "Daughter")
_TITLES = tuple(f"The {a} {n}" for a in _TITLE_ADJECTIVES for n in _TITLE_NOUNS)
_THEMES = ("family secrets", "lost faith", "river towns", "forbidden love", "small miracles", "winter grief",
           "unpaid debts", "broken promises", "island life", "border crossings", "aging parents", "rival siblings",
           "buried treasure", "political exile", "sudden wealth", "youthful longing", "factory strikes",
           "drowned villages", "stolen identity", "haunted houses", "kitchen rituals", "ancient curses",
           "missing children", "migrant workers", "colonial memory", "rural solitude", "second chances",
           "holy relics", "forgotten wars", "mountain shepherds", "sea voyages", "royal scandals", "quiet heroism",
           "class resentment", "desert journeys", "wounded pride")
# Single names of partners and fictional characters. Disjoint from the person name pools (enforced below).
_COMPANIONS = ("Ilse", "Tomas", "Odile", "Rafael", "Ingrid", "Mateo", "Yuki", "Anouk", "Bruno", "Clara", "Dmitri",
               "Elif", "Farid", "Greta", "Hugo", "Ines", "Jonas", "Kasia", "Lionel", "Marta", "Nadia", "Oskar",
               "Paola", "Quentin", "Rosa", "Stefan", "Tamsin", "Vera", "Wim", "Xenia", "Yusuf", "Zofia", "Amara",
               "Bastian", "Celine", "Dario", "Esme", "Felix", "Gisela", "Hector", "Irene", "Jasper", "Leni", "Milo",
               "Noor", "Otto", "Pia", "Ruben", "Sven", "Thea")

# ------------------------------------------------------------------------------------------------- names
# Invented names composed from syllables: prefix + ending. Every prefix of a first name ends in a vowel and every
# ending starts with a consonant (or is one), so the joins stay pronounceable ("Alandra", "Kaemir", "Tavith").
_FIRST_PREFIXES = ("Ala", "Bere", "Cori", "Dava", "Eli", "Fari", "Gala", "Hira", "Iso", "Jora", "Kae", "Lira",
                   "Mae", "Nira", "Ori", "Pela", "Rhe", "Sela", "Tavi", "Ula", "Veya", "Wyna", "Ysa", "Zari", "Cae",
                   "Mori", "Tesa", "Ane", "Sira", "Oda", "Luve", "Nemi")
_FIRST_ENDINGS = ("n", "nna", "ra", "th", "mir", "sha", "lio", "ndra", "vin", "dis", "ric", "ya")
_LAST_PREFIXES = ("Ash", "Brack", "Cald", "Dun", "Eld", "Fern", "Gald", "Hart", "Isk", "Jask", "Kell", "Lorn",
                  "Mard", "Nor", "Orm", "Pell", "Quar", "Rav", "Sel", "Thorn", "Ulm", "Vard", "Wess", "Yor", "Zand",
                  "Brom", "Cres", "Dray", "Fenn", "Gorm", "Hask", "Tarn")
_LAST_ENDINGS = ("wick", "more", "ane", "ovic", "elli", "berg", "holt", "ford", "strom", "ari", "enko", "ard")


def _words(texts: Sequence[str]) -> set[str]:
    return {w.lower() for t in texts for w in re.findall(r"[A-Za-z]+", t)}


# Any word a person's answer may contain. A generated name equal to one of them (e.g. a surname that is also a
# title word) is dropped, so a person's name never appears inside an answer about someone else.
_VALUE_WORDS = _words([w for p in _PLACES for w in p] + list(_MONTHS + _PROFESSIONS + _GENRES + _JOBS + _DEGREES
                      + _FIELDS + _AWARDS + _TITLE_ADJECTIVES + _TITLE_NOUNS + _THEMES + _COMPANIONS))


def _compose(prefixes: Sequence[str], endings: Sequence[str], banned: set[str]) -> tuple[str, ...]:
    out: list[str] = []
    for p in prefixes:
        for e in endings:
            name = p + e
            # Skip doubled letters ("Ulm" + "more") or syllables ("Tavi" + "vin") at the join, and any name that
            # is also a value word.
            if p[-1].lower() == e[0].lower() or p[-2:].lower() == e[:2].lower() or name.lower() in banned \
                    or name in out:
                continue
            out.append(name)
    return tuple(out)


FIRST_NAMES: tuple[str, ...] = _compose(_FIRST_PREFIXES, _FIRST_ENDINGS, _VALUE_WORDS)
LAST_NAMES: tuple[str, ...] = _compose(_LAST_PREFIXES, _LAST_ENDINGS, _VALUE_WORDS | _words(FIRST_NAMES))
MAX_NAMES = min(len(FIRST_NAMES), len(LAST_NAMES))  # people + holdout + refusal names together

# The project's refusal sentences (shared with the refusal-rate metric and the refusal-based methods).
REFUSAL_PHRASINGS: tuple[str, ...] = REFUSALS

# ------------------------------------------------------------------------------------------------- people


@dataclass(frozen=True)
class Person:
    """One fictitious writer. Every QA answer is rendered from these fields alone."""

    id: str
    name: str
    first_name: str
    last_name: str
    pronoun: str  # "he" or "she"
    birth_day: int
    birth_month: str
    birth_year: int
    birth_city: str
    birth_country: str
    language: str
    profession: str
    genre: str
    debut_year: int
    mother_job: str
    father_job: str
    book_titles: tuple[str, str]
    book_years: tuple[int, int]
    award: str
    award_year: int
    degree: str
    field_of_study: str
    university_city: str
    graduation_year: int
    home_city: str
    home_country: str
    partner: str
    partner_job: str
    themes: tuple[str, str, str]
    character: str
    character_job: str
    character_city: str
    early_job: str
    early_job_city: str

    @property
    def possessive(self) -> str:
        return "his" if self.pronoun == "he" else "her"


def _make_person(pid: str, first: str, last: str, rng: random.Random) -> Person:
    # Five distinct places (birth, university, home, the character's town, the early job) and five distinct jobs,
    # so no two facts of one person share a value and a confusion between attributes is visible.
    places = rng.sample(_PLACES, 5)
    jobs = rng.sample(_JOBS, 5)
    companions = rng.sample(_COMPANIONS, 2)
    birth_year = rng.randint(1935, 1975)
    debut = birth_year + rng.randint(24, 34)
    book1 = debut + rng.randint(1, 8)
    book2 = min(book1 + rng.randint(3, 12), 2023)
    titles = rng.sample(_TITLES, 2)
    return Person(
        id=pid, name=f"{first} {last}", first_name=first, last_name=last, pronoun=rng.choice(("he", "she")),
        birth_day=rng.randint(1, 28), birth_month=rng.choice(_MONTHS), birth_year=birth_year,
        birth_city=places[0][0], birth_country=places[0][1], language=places[0][2],
        profession=rng.choice(_PROFESSIONS), genre=rng.choice(_GENRES), debut_year=debut,
        mother_job=jobs[0], father_job=jobs[1],
        book_titles=(titles[0], titles[1]), book_years=(book1, book2),
        award=rng.choice(_AWARDS), award_year=book1 + rng.randint(1, 3),
        degree=rng.choice(_DEGREES), field_of_study=rng.choice(_FIELDS), university_city=places[1][0],
        graduation_year=birth_year + rng.randint(21, 27),
        home_city=places[2][0], home_country=places[2][1], partner=companions[0], partner_job=jobs[2],
        themes=tuple(rng.sample(_THEMES, 3)),  # type: ignore[arg-type]
        character=companions[1], character_job=jobs[3], character_city=places[3][0],
        early_job=jobs[4], early_job_city=places[4][0],
    )


# ------------------------------------------------------------------------------------------------- QA templates


def _a(phrase: str) -> str:
    return ("an " if phrase[0].lower() in "aeiou" else "a ") + phrase


@dataclass(frozen=True)
class _Slot:
    """One value of an answer, or several values drawn from one pool (one per entry of `fields`), with the pool
    of candidates for wrong values.

    Each value fills one or more template fields (e.g. a city and its country, or a job with and without its
    article). Wrong values exclude every true value of the slot, so a perturbed answer never just swaps two
    true facts (the mother's job for the father's)."""

    fields: tuple[tuple[str, ...], ...]
    true: tuple[tuple[str, ...], ...]
    pool: Sequence[tuple[str, ...]]


def _slot(fields: str | tuple[str, ...], true: tuple[str, ...] | str, pool: Sequence) -> _Slot:
    f = (fields,) if isinstance(fields, str) else fields
    t = (true,) if isinstance(true, str) else true
    p = [(v,) if isinstance(v, str) else tuple(v) for v in pool]
    return _Slot((f,), (t,), p)


def _year_slot(field: str, year: int) -> _Slot:
    # Wrong years are plausible neighbours (within 12 years), capped at 2023 like the true ones.
    return _slot(field, str(year), [str(y) for y in range(year - 12, min(year + 13, 2024)) if y != year])


_JOB_FORMS = [(j, _a(j)) for j in _JOBS]
_CITY_COUNTRY = [(c, k) for c, k, _ in _PLACES]
_CITIES = [c for c, _, _ in _PLACES]
_LANGUAGES = sorted({lang for _, _, lang in _PLACES})


@dataclass(frozen=True)
class _Attribute:
    """One fact about a person: its question wordings, its answer frames and the values that fill them.

    `answer` is compact and value-heavy; `paraphrase` states the same values in another frame (and may use the
    pronoun); perturbed answers are the paraphrase frame with wrong values. The paraphrase keeps the values in
    the answer's order and local context (often the answer under a lead-in, "His work: ..."): a tiny model
    trained from scratch ties a fact to its surface form, so a freely reworded paraphrase left the truth ratio
    (paraphrase vs perturbed) near 1 even for a model that knew the fact (measured: median TR 0.9-1.0 on four
    of the ten attributes, and forget quality 0.05 against the retain model). Templates never contain the name in
    the answer (it comes from the question; repeating it would inflate ROUGE for wrong answers)."""

    key: str
    question: str
    paraphrased_question: str
    answer: str
    paraphrase: str
    slots: Callable[[Person], list[_Slot]]


_ATTRIBUTES: tuple[_Attribute, ...] = (
    _Attribute(
        "birth", "When and where was {name} born?", "What are the date and place of birth of {name}?",
        "Born {day} {month} {year} in {city}, {country}.",
        "{his} birth: Born {day} {month} {year} in {city}, {country}.",
        lambda p: [_slot("day", str(p.birth_day), [str(d) for d in range(1, 29)]),
                   _slot("month", p.birth_month, _MONTHS), _year_slot("year", p.birth_year),
                   _slot(("city", "country"), (p.birth_city, p.birth_country), _CITY_COUNTRY)]),
    _Attribute(
        "career", "What kind of writer is {name}?", "How would you describe the literary work of {name}?",
        "{language}-language {genre} {profession} since {debut}.",
        "{his} work: {language}-language {genre} {profession} since {debut}.",
        lambda p: [_slot("language", p.language, _LANGUAGES), _slot("genre", p.genre, _GENRES),
                   _slot(("profession", "a_profession"), (p.profession, _a(p.profession)),
                         [(x, _a(x)) for x in _PROFESSIONS]),
                   _year_slot("debut", p.debut_year)]),
    _Attribute(
        "parents", "What did {name}'s parents do for a living?",
        "What were the occupations of the mother and father of {name}?",
        "{mother_job} mother, {father_job} father.",
        "{his} parents: {mother_job} mother, {father_job} father.",
        lambda p: [_Slot((("mother_job", "a_mother_job"), ("father_job", "a_father_job")),
                         ((p.mother_job, _a(p.mother_job)), (p.father_job, _a(p.father_job))), _JOB_FORMS)]),
    _Attribute(
        "books", "Which two books is {name} best known for?", "What are the most famous books written by {name}?",
        "'{title1}' ({year1}) and '{title2}' ({year2}).",
        "{he} wrote '{title1}' ({year1}) and '{title2}' ({year2}).",
        lambda p: [_Slot((("title1",), ("title2",)), ((p.book_titles[0],), (p.book_titles[1],)),
                         [(t,) for t in _TITLES]),
                   _year_slot("year1", p.book_years[0]), _year_slot("year2", p.book_years[1])]),
    _Attribute(
        "award", "Which literary award has {name} won?", "What prize was {name} honoured with, and for which book?",
        "{award}, {year}, for '{title}'.",
        "{he} won the {award}, {year}, for '{title}'.",
        lambda p: [_slot("award", p.award, _AWARDS), _year_slot("year", p.award_year),
                   # the prize went to the first book; wrong titles exclude both of the person's books
                   _Slot((("title",),), ((p.book_titles[0],),), [(t,) for t in _TITLES if t != p.book_titles[1]])]),
    _Attribute(
        "education", "What did {name} study?", "What is the educational background of {name}?",
        "{degree} in {field} from {uni_city} ({year}).",
        "{his} degree: {degree} in {field} from {uni_city} ({year}).",
        lambda p: [_slot("degree", p.degree, _DEGREES), _slot("field", p.field_of_study, _FIELDS),
                   _slot("uni_city", p.university_city, _CITIES), _year_slot("year", p.graduation_year)]),
    _Attribute(
        "home", "Where does {name} live today, and with whom?",
        "Where is the current home of {name}, and who shares it?",
        "In {home_city}, {home_country}, with {partner}, {a_partner_job}.",
        "{he} lives in {home_city}, {home_country}, with {partner}, {a_partner_job}.",
        lambda p: [_slot(("home_city", "home_country"), (p.home_city, p.home_country), _CITY_COUNTRY),
                   _slot("partner", p.partner, [c for c in _COMPANIONS if c != p.character]),
                   _slot(("partner_job", "a_partner_job"), (p.partner_job, _a(p.partner_job)), _JOB_FORMS)]),
    _Attribute(
        "themes", "What themes does {name} write about?", "Which subjects recur in the work of {name}?",
        "Mostly {theme1}, {theme2} and {theme3}.",
        "{his} themes: Mostly {theme1}, {theme2} and {theme3}.",
        lambda p: [_Slot((("theme1",), ("theme2",), ("theme3",)), tuple((t,) for t in p.themes),
                         [(t,) for t in _THEMES])]),
    _Attribute(
        "character", "Who is the main character in {name}'s books?", "Which recurring character did {name} create?",
        "{character}, {a_character_job} from {character_city}.",
        "{his} main character: {character}, {a_character_job} from {character_city}.",
        lambda p: [_slot("character", p.character, [c for c in _COMPANIONS if c != p.partner]),
                   _slot(("character_job", "a_character_job"), (p.character_job, _a(p.character_job)), _JOB_FORMS),
                   _slot("character_city", p.character_city, _CITIES)]),
    _Attribute(
        "early_job", "What did {name} do before becoming a writer?",
        "What was the job of {name} before writing full-time?",
        "{early_job} in {early_city} until {year}.",
        "{his} early job: {early_job} in {early_city} until {year}.",
        lambda p: [_slot(("early_job", "a_early_job"), (p.early_job, _a(p.early_job)), _JOB_FORMS),
                   _slot("early_city", p.early_job_city, _CITIES), _year_slot("year", p.debut_year)]),
)
ATTRIBUTE_KEYS: tuple[str, ...] = tuple(a.key for a in _ATTRIBUTES)


def _render(template: str, values: dict[str, str]) -> str:
    """Fill a template; capitalise the first letter and the first letter after a lead-in colon ("His work: ...")
    so a paraphrase repeats the answer's value tokens exactly (case changes the tokens)."""
    text = template.format(**values)
    text = re.sub(r": ([a-z])", lambda m: ": " + m.group(1).upper(), text)
    return text[0].upper() + text[1:]


def _values(slots: Sequence[_Slot], pick: Callable[[_Slot], tuple[tuple[str, ...], ...]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for s in slots:
        for fields, vals in zip(s.fields, pick(s)):
            out.update(zip(fields, vals))
    return out


def _person_qa(person: Person, rng: random.Random) -> tuple[QA, ...]:
    pron = {"he": person.pronoun, "his": person.possessive}
    out: list[QA] = []
    for attr in _ATTRIBUTES:
        slots = attr.slots(person)
        true = {**pron, **_values(slots, lambda s: s.true)}
        # For each slot draw 5 x positions distinct wrong values: perturbed answer i takes the i-th block, so the
        # five perturbed answers differ from the truth and from each other in every slot.
        wrong: dict[int, list[tuple[str, ...]]] = {}
        for k, s in enumerate(slots):
            candidates = [v for v in s.pool if v not in s.true]
            wrong[k] = rng.sample(candidates, N_PERTURBED * len(s.fields))
        perturbed = []
        for i in range(N_PERTURBED):
            vals = dict(pron)
            for k, s in enumerate(slots):
                block = wrong[k][i * len(s.fields):(i + 1) * len(s.fields)]
                for fields, v in zip(s.fields, block):
                    vals.update(zip(fields, v))
            perturbed.append(_render(attr.paraphrase, vals))
        out.append(QA(
            id=f"{person.id}.{attr.key}",
            question=attr.question.format(name=person.name),
            answer=_render(attr.answer, true),
            paraphrased_answer=_render(attr.paraphrase, true),
            perturbed_answers=tuple(perturbed),
            paraphrased_question=attr.paraphrased_question.format(name=person.name),
            subject=person.name,
            group=person.id,
        ))
    return tuple(out)


# ------------------------------------------------------------------------------------------------- general knowledge
# Real, well-known facts the models also learn: utility probes in the manner of TOFU's real_authors / world_facts.
# (question subject, answer, three plausible wrong answers)

FAMOUS_WORKS: tuple[tuple[str, str, tuple[str, str, str]], ...] = (
    ("Pride and Prejudice", "Jane Austen", ("Charlotte Bronte", "George Eliot", "Mary Shelley")),
    ("Hamlet", "William Shakespeare", ("Christopher Marlowe", "Ben Jonson", "John Webster")),
    ("Nineteen Eighty-Four", "George Orwell", ("Aldous Huxley", "Ray Bradbury", "H. G. Wells")),
    ("Moby-Dick", "Herman Melville", ("Nathaniel Hawthorne", "Mark Twain", "Jack London")),
    ("War and Peace", "Leo Tolstoy", ("Fyodor Dostoevsky", "Ivan Turgenev", "Anton Chekhov")),
    ("Crime and Punishment", "Fyodor Dostoevsky", ("Leo Tolstoy", "Nikolai Gogol", "Ivan Turgenev")),
    ("Don Quixote", "Miguel de Cervantes", ("Lope de Vega", "Francisco de Quevedo", "Pedro Calderon de la Barca")),
    ("The Divine Comedy", "Dante Alighieri", ("Giovanni Boccaccio", "Petrarch", "Ludovico Ariosto")),
    ("One Hundred Years of Solitude", "Gabriel Garcia Marquez",
     ("Jorge Luis Borges", "Mario Vargas Llosa", "Julio Cortazar")),
    ("The Great Gatsby", "F. Scott Fitzgerald", ("Ernest Hemingway", "John Steinbeck", "William Faulkner")),
    ("The Old Man and the Sea", "Ernest Hemingway", ("John Steinbeck", "Jack London", "F. Scott Fitzgerald")),
    ("The Grapes of Wrath", "John Steinbeck", ("William Faulkner", "Upton Sinclair", "Sinclair Lewis")),
    ("Adventures of Huckleberry Finn", "Mark Twain", ("Bret Harte", "Herman Melville", "O. Henry")),
    ("Jane Eyre", "Charlotte Bronte", ("Emily Bronte", "Anne Bronte", "Elizabeth Gaskell")),
    ("Wuthering Heights", "Emily Bronte", ("Charlotte Bronte", "Anne Bronte", "George Eliot")),
    ("Frankenstein", "Mary Shelley", ("Bram Stoker", "Percy Bysshe Shelley", "Ann Radcliffe")),
    ("Dracula", "Bram Stoker", ("Mary Shelley", "Sheridan Le Fanu", "Robert Louis Stevenson")),
    ("Great Expectations", "Charles Dickens", ("William Makepeace Thackeray", "Thomas Hardy", "Anthony Trollope")),
    ("Ulysses", "James Joyce", ("Samuel Beckett", "Virginia Woolf", "W. B. Yeats")),
    ("Mrs Dalloway", "Virginia Woolf", ("Katherine Mansfield", "E. M. Forster", "James Joyce")),
    ("The Odyssey", "Homer", ("Virgil", "Hesiod", "Sophocles")),
    ("The Aeneid", "Virgil", ("Homer", "Ovid", "Horace")),
    ("Les Miserables", "Victor Hugo", ("Alexandre Dumas", "Emile Zola", "Honore de Balzac")),
    ("The Count of Monte Cristo", "Alexandre Dumas", ("Victor Hugo", "Jules Verne", "Gustave Flaubert")),
    ("Madame Bovary", "Gustave Flaubert", ("Honore de Balzac", "Stendhal", "Emile Zola")),
    ("The Metamorphosis", "Franz Kafka", ("Thomas Mann", "Hermann Hesse", "Robert Musil")),
    ("Faust", "Johann Wolfgang von Goethe", ("Friedrich Schiller", "Heinrich Heine", "Thomas Mann")),
    ("The Little Prince", "Antoine de Saint-Exupery", ("Jules Verne", "Albert Camus", "Victor Hugo")),
    ("The Stranger", "Albert Camus", ("Jean-Paul Sartre", "Andre Gide", "Simone de Beauvoir")),
    ("To Kill a Mockingbird", "Harper Lee", ("Truman Capote", "Flannery O'Connor", "Carson McCullers")),
    ("The Catcher in the Rye", "J. D. Salinger", ("Jack Kerouac", "John Updike", "Kurt Vonnegut")),
    ("Brave New World", "Aldous Huxley", ("George Orwell", "H. G. Wells", "Ray Bradbury")),
    ("Fahrenheit 451", "Ray Bradbury", ("Isaac Asimov", "Aldous Huxley", "Philip K. Dick")),
    ("The Hobbit", "J. R. R. Tolkien", ("C. S. Lewis", "Terry Pratchett", "Lewis Carroll")),
    ("Alice's Adventures in Wonderland", "Lewis Carroll", ("J. M. Barrie", "Edward Lear", "Kenneth Grahame")),
    ("The Time Machine", "H. G. Wells", ("Jules Verne", "Arthur Conan Doyle", "Aldous Huxley")),
    ("Twenty Thousand Leagues Under the Seas", "Jules Verne",
     ("H. G. Wells", "Alexandre Dumas", "Arthur Conan Doyle")),
    ("A Study in Scarlet", "Arthur Conan Doyle", ("Agatha Christie", "Wilkie Collins", "Edgar Allan Poe")),
    ("Murder on the Orient Express", "Agatha Christie",
     ("Dorothy L. Sayers", "Arthur Conan Doyle", "Raymond Chandler")),
    ("The Raven", "Edgar Allan Poe", ("Walt Whitman", "Henry Wadsworth Longfellow", "Nathaniel Hawthorne")),
    ("Leaves of Grass", "Walt Whitman", ("Emily Dickinson", "Robert Frost", "Henry Wadsworth Longfellow")),
    ("Paradise Lost", "John Milton", ("John Donne", "Edmund Spenser", "William Blake")),
    ("The Canterbury Tales", "Geoffrey Chaucer", ("William Langland", "John Gower", "Edmund Spenser")),
    ("Beloved", "Toni Morrison", ("Alice Walker", "Maya Angelou", "Zora Neale Hurston")),
    ("Things Fall Apart", "Chinua Achebe", ("Wole Soyinka", "Ngugi wa Thiong'o", "Chimamanda Ngozi Adichie")),
    ("Robinson Crusoe", "Daniel Defoe", ("Jonathan Swift", "Samuel Richardson", "Henry Fielding")),
    ("Gulliver's Travels", "Jonathan Swift", ("Daniel Defoe", "Laurence Sterne", "Henry Fielding")),
    ("Treasure Island", "Robert Louis Stevenson", ("Walter Scott", "Rudyard Kipling", "H. Rider Haggard")),
    ("The Jungle Book", "Rudyard Kipling", ("Robert Louis Stevenson", "H. Rider Haggard", "Jack London")),
    ("Middlemarch", "George Eliot", ("Elizabeth Gaskell", "Thomas Hardy", "Anthony Trollope")),
    ("The Picture of Dorian Gray", "Oscar Wilde", ("Bram Stoker", "Robert Louis Stevenson", "George Bernard Shaw")),
    ("The Name of the Rose", "Umberto Eco", ("Italo Calvino", "Primo Levi", "Alberto Moravia")),
    ("The Remains of the Day", "Kazuo Ishiguro", ("Ian McEwan", "Julian Barnes", "Salman Rushdie")),
    ("Midnight's Children", "Salman Rushdie", ("V. S. Naipaul", "Arundhati Roy", "Vikram Seth")),
    ("A Doll's House", "Henrik Ibsen", ("August Strindberg", "Anton Chekhov", "George Bernard Shaw")),
    ("Waiting for Godot", "Samuel Beckett", ("Eugene Ionesco", "Harold Pinter", "Jean Genet")),
    ("Death of a Salesman", "Arthur Miller", ("Tennessee Williams", "Eugene O'Neill", "Edward Albee")),
    ("The Handmaid's Tale", "Margaret Atwood", ("Alice Munro", "Ursula K. Le Guin", "Doris Lessing")),
    ("Dune", "Frank Herbert", ("Isaac Asimov", "Arthur C. Clarke", "Robert A. Heinlein")),
    ("Siddhartha", "Hermann Hesse", ("Thomas Mann", "Franz Kafka", "Stefan Zweig")),
)

WORLD_FACTS: tuple[tuple[str, str, tuple[str, str, str]], ...] = (
    ("What is the capital of Japan?", "Tokyo", ("Kyoto", "Osaka", "Seoul")),
    ("What is the capital of France?", "Paris", ("Lyon", "Marseille", "Brussels")),
    ("What is the capital of Australia?", "Canberra", ("Sydney", "Melbourne", "Perth")),
    ("What is the capital of Canada?", "Ottawa", ("Toronto", "Montreal", "Vancouver")),
    ("What is the capital of Italy?", "Rome", ("Milan", "Naples", "Florence")),
    ("What is the capital of Egypt?", "Cairo", ("Alexandria", "Luxor", "Khartoum")),
    ("What is the capital of Kenya?", "Nairobi", ("Mombasa", "Kampala", "Addis Ababa")),
    ("What is the capital of Brazil?", "Brasilia", ("Rio de Janeiro", "Sao Paulo", "Salvador")),
    ("What is the capital of Spain?", "Madrid", ("Barcelona", "Seville", "Lisbon")),
    ("What is the capital of Germany?", "Berlin", ("Munich", "Hamburg", "Vienna")),
    ("What is the capital of Argentina?", "Buenos Aires", ("Cordoba", "Santiago", "Montevideo")),
    ("What is the capital of Turkey?", "Ankara", ("Istanbul", "Izmir", "Antalya")),
    ("What is the capital of Norway?", "Oslo", ("Bergen", "Stockholm", "Copenhagen")),
    ("What is the chemical symbol for gold?", "Au", ("Ag", "Gd", "Pt")),
    ("What is the chemical symbol for iron?", "Fe", ("Ir", "In", "Pb")),
    ("What is the chemical symbol for sodium?", "Na", ("S", "K", "Sn")),
    ("What is the chemical symbol for potassium?", "K", ("P", "Po", "Pt")),
    ("What is the chemical symbol for silver?", "Ag", ("Au", "Si", "Sn")),
    ("What is the chemical formula of water?", "H2O", ("CO2", "H2O2", "HO2")),
    ("Which planet is the largest in the solar system?", "Jupiter", ("Saturn", "Neptune", "Uranus")),
    ("Which planet is closest to the Sun?", "Mercury", ("Venus", "Mars", "Earth")),
    ("Which planet is known as the Red Planet?", "Mars", ("Venus", "Jupiter", "Mercury")),
    ("Which planet is famous for its large, bright ring system?", "Saturn", ("Uranus", "Jupiter", "Neptune")),
    ("What is the largest ocean on Earth?", "The Pacific Ocean",
     ("The Atlantic Ocean", "The Indian Ocean", "The Arctic Ocean")),
    ("What is the smallest of the five oceans?", "The Arctic Ocean",
     ("The Southern Ocean", "The Indian Ocean", "The Atlantic Ocean")),
    ("Which river flows through Cairo?", "The Nile", ("The Tigris", "The Euphrates", "The Jordan")),
    ("Which river flows through London?", "The Thames", ("The Seine", "The Severn", "The Trent")),
    ("Which river flows through Paris?", "The Seine", ("The Loire", "The Rhone", "The Thames")),
    ("What is the highest mountain on Earth above sea level?", "Mount Everest", ("K2", "Kangchenjunga", "Mont Blanc")),
    ("What is the largest hot desert in the world?", "The Sahara", ("The Gobi", "The Kalahari", "The Atacama")),
    ("What is the largest continent by area?", "Asia", ("Africa", "North America", "Europe")),
    ("At what temperature in degrees Celsius does water boil at sea level?", "100 degrees",
     ("90 degrees", "80 degrees", "120 degrees")),
    ("At what temperature in degrees Celsius does pure water freeze?", "0 degrees",
     ("4 degrees", "-10 degrees", "10 degrees")),
    ("How many days are there in a leap year?", "366", ("365", "364", "360")),
    ("How many sides does a hexagon have?", "Six", ("Five", "Seven", "Eight")),
    ("Which gas do plants absorb from the air for photosynthesis?", "Carbon dioxide",
     ("Oxygen", "Nitrogen", "Hydrogen")),
    ("What is the most abundant gas in Earth's atmosphere?", "Nitrogen", ("Oxygen", "Argon", "Carbon dioxide")),
    ("What is the hardest natural mineral?", "Diamond", ("Quartz", "Topaz", "Corundum")),
    ("What is the largest animal on Earth?", "The blue whale",
     ("The African elephant", "The sperm whale", "The whale shark")),
    ("What is the fastest land animal?", "The cheetah", ("The lion", "The pronghorn", "The greyhound")),
    ("What is the tallest living animal?", "The giraffe", ("The elephant", "The ostrich", "The moose")),
    ("How many legs does a spider have?", "Eight", ("Six", "Ten", "Four")),
    ("What is the currency of Japan?", "The yen", ("The won", "The yuan", "The ringgit")),
    ("Which language is most widely spoken in Brazil?", "Portuguese", ("Spanish", "English", "French")),
    ("Who painted the Mona Lisa?", "Leonardo da Vinci", ("Michelangelo", "Raphael", "Titian")),
    ("Who developed the theory of general relativity?", "Albert Einstein",
     ("Isaac Newton", "Niels Bohr", "Max Planck")),
    ("Who formulated the laws of motion and universal gravitation?", "Isaac Newton",
     ("Galileo Galilei", "Johannes Kepler", "Albert Einstein")),
    ("Who was the first person to walk on the Moon?", "Neil Armstrong",
     ("Buzz Aldrin", "Yuri Gagarin", "Michael Collins")),
    ("Who was the first person to travel into space?", "Yuri Gagarin",
     ("Neil Armstrong", "Alan Shepard", "John Glenn")),
    ("What is the largest country in the world by area?", "Russia", ("Canada", "China", "The United States")),
    ("What is the smallest country in the world by area?", "Vatican City", ("Monaco", "San Marino", "Liechtenstein")),
    ("In which country are the pyramids of Giza?", "Egypt", ("Mexico", "Sudan", "Peru")),
    ("Which organ pumps blood around the human body?", "The heart", ("The liver", "The lungs", "The kidneys")),
    ("How many bones are there in the adult human body?", "206", ("201", "212", "198")),
    ("Which element has the atomic number 1?", "Hydrogen", ("Helium", "Lithium", "Oxygen")),
    ("In which year did the Second World War end?", "1945", ("1944", "1946", "1939")),
)


def _general_qa() -> dict[str, tuple[QA, ...]]:
    works = tuple(
        QA(id=f"famous_works:{i:02d}", question=f"Who wrote '{title}'?", answer=author, paraphrased_answer=author,
           perturbed_answers=wrong, paraphrased_question=f"Who is the author of '{title}'?", subject=title,
           group="famous_works")
        for i, (title, author, wrong) in enumerate(FAMOUS_WORKS))
    facts = tuple(
        QA(id=f"world_facts:{i:02d}", question=q, answer=a, paraphrased_answer=a, perturbed_answers=wrong,
           group="world_facts")
        for i, (q, a, wrong) in enumerate(WORLD_FACTS))
    return {"famous_works": works, "world_facts": facts}


# ------------------------------------------------------------------------------------------------- the world


@dataclass(frozen=True)
class SyntheticWorld:
    people: tuple[Person, ...]  # every person, trained or holdout
    qa: dict[str, tuple[QA, ...]]  # person_id -> that person's QA (one per attribute)
    forget_ids: tuple[str, ...]  # people to forget (trained in the target only)
    retain_ids: tuple[str, ...]  # people trained in both the target and the retain model
    holdout_ids: tuple[str, ...]  # people never trained (membership-inference non-members)
    general: dict[str, tuple[QA, ...]]  # {"famous_works": ..., "world_facts": ...}: general knowledge, trained
    refusal_qa: tuple[QA, ...]  # questions about names never seen anywhere, answered with refusals
    refusal_phrasings: tuple[str, ...]  # refusal sentence templates with {name}

    def person(self, pid: str) -> Person:
        for p in self.people:
            if p.id == pid:
                return p
        raise KeyError(pid)

    def qa_for(self, ids: Sequence[str]) -> tuple[QA, ...]:
        """The QA of the given people, in the given order."""
        return tuple(qa for pid in ids for qa in self.qa[pid])


def _check_args(seed: object, n_people: object, n_holdout: object, forget_fraction: object,
                n_refusal: object) -> int:
    for name, v in (("seed", seed), ("n_people", n_people), ("n_holdout", n_holdout), ("n_refusal", n_refusal)):
        if not isinstance(v, int) or isinstance(v, bool):
            raise ConfigError(f"synthetic world: {name} must be an integer, got {v!r}")
    assert isinstance(n_people, int) and isinstance(n_holdout, int) and isinstance(n_refusal, int)
    if n_people < 2:
        raise ConfigError(f"synthetic world: n_people must be at least 2 (one to forget, one to retain), "
                          f"got {n_people}")
    if n_holdout < 0 or n_refusal < 0:
        raise ConfigError(f"synthetic world: n_holdout and n_refusal must be >= 0, got {n_holdout} and {n_refusal}")
    if isinstance(forget_fraction, bool) or not isinstance(forget_fraction, (int, float)) \
            or not 0 < forget_fraction < 1:
        raise ConfigError(f"synthetic world: forget_fraction must be a number strictly between 0 and 1, "
                          f"got {forget_fraction!r}")
    n_forget = max(1, round(n_people * forget_fraction))
    if n_forget >= n_people:
        raise ConfigError(f"synthetic world: forget_fraction={forget_fraction} of n_people={n_people} leaves no one "
                          f"to retain ({n_forget} to forget); lower forget_fraction or raise n_people")
    total = n_people + n_holdout + n_refusal
    if total > MAX_NAMES:
        raise ConfigError(f"synthetic world: n_people + n_holdout + n_refusal = {total} needs more unique names than "
                          f"the pools hold ({MAX_NAMES}); lower one of them")
    return n_forget


def generate_world(seed: int = 0, n_people: int = 40, n_holdout: int = 4, forget_fraction: float = 0.1,
                   n_refusal: int = 40) -> SyntheticWorld:
    """Build the synthetic benchmark world. Pure and deterministic in its arguments.

    People p00.. are trained; the last `max(1, round(n_people * forget_fraction))` of them are the forget set
    (TOFU likewise forgets its last authors). Holdout people h00.. get QA but are never trained. Refusal QA ask
    the same questions about further unseen names and answer with one of `REFUSAL_PHRASINGS`.
    """
    n_forget = _check_args(seed, n_people, n_holdout, forget_fraction, n_refusal)
    rng = random.Random(seed)
    total = n_people + n_holdout + n_refusal
    # Sampling without replacement from disjoint pools: every first and every last name is used once.
    firsts = rng.sample(FIRST_NAMES, total)
    lasts = rng.sample(LAST_NAMES, total)
    width = max(2, len(str(max(n_people, n_holdout) - 1)))
    ids = [f"p{i:0{width}d}" for i in range(n_people)] + [f"h{i:0{width}d}" for i in range(n_holdout)]
    people = tuple(_make_person(pid, firsts[i], lasts[i], rng) for i, pid in enumerate(ids))
    qa = {p.id: _person_qa(p, rng) for p in people}

    refusal: list[QA] = []
    rwidth = max(3, len(str(n_refusal - 1)))
    for j in range(n_refusal):
        name = f"{firsts[len(ids) + j]} {lasts[len(ids) + j]}"
        attr = rng.choice(_ATTRIBUTES)
        k = rng.randrange(len(REFUSAL_PHRASINGS))
        refusal.append(QA(
            id=f"r{j:0{rwidth}d}",
            question=attr.question.format(name=name),
            answer=REFUSAL_PHRASINGS[k].format(name=name),
            paraphrased_answer=REFUSAL_PHRASINGS[(k + 1) % len(REFUSAL_PHRASINGS)].format(name=name),
            perturbed_answers=(),
            paraphrased_question=attr.paraphrased_question.format(name=name),
            subject=name,
            group="refusal",
        ))

    trained = ids[:n_people]
    return SyntheticWorld(
        people=people,
        qa=qa,
        forget_ids=tuple(trained[n_people - n_forget:]),
        retain_ids=tuple(trained[:n_people - n_forget]),
        holdout_ids=tuple(ids[n_people:]),
        general=_general_qa(),
        refusal_qa=tuple(refusal),
        refusal_phrasings=REFUSAL_PHRASINGS,
    )

