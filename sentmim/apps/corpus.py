"""The built-in default corpus: English sentences from a small probabilistic grammar.

Nothing is downloaded and there is no licence to worry about: the sentences are generated on the fly,
deterministically from a seed, by the grammar in this file. They are meant for the demo and for fast tests, so they
look like Penn Treebank text as a word-level tokenizer sees it: lowercase, tokens separated by single spaces,
punctuation and the clitics "n't" and "'s" as separate tokens, 4 to 25 tokens per sentence, about 700 word types.

The corpus has latent structure that a sentence auto-encoder can learn to encode:

* a **topic** (farm, kitchen, city, school, sports, forest, office, music) picks most content words, and usually
  stays the same across the clauses of one sentence;
* a **tense** (past / present / future) shows up in verb forms, auxiliaries and time adverbials ("yesterday",
  "every morning", "next week"), again shared across clauses;
* the **subject** (name, pronoun or noun phrase, singular or plural) controls agreement ("the dog sleeps",
  "the dogs sleep", "i am", "they were");
* a **sentence type**: statements, negations, yes/no and wh-questions, relative clauses, coordination and
  subordination, reported speech, existentials, imperatives and exclamations.

Word choices follow Zipf-like weights, so some words are frequent and many are rare, as in natural text. The space of
sentences is combinatorially large: a model cannot simply memorise it.

    >>> from sentmim.apps.corpus import builtin_sentences
    >>> builtin_sentences(2, seed=0)  # doctest: +SKIP
    ['the hungry goats did n't chase the farmer near the barn yesterday .', 'where will anna park the car ?']
"""

from __future__ import annotations

import random
from bisect import bisect
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import accumulate

from sentmim.data import register_dataset

MIN_TOKENS = 4
MAX_TOKENS = 25


class _Choice:
    """A fixed list of options sampled with Zipf-like weights (earlier options are more frequent).

    Sampling is one `random()` call and a binary search, which keeps generation of 20k sentences well under a
    second.
    """

    def __init__(self, items: Sequence[str] | str, weights: Sequence[float] | None = None, exponent: float = 0.8):
        self.items = tuple(items.split() if isinstance(items, str) else items)
        if weights is None:
            weights = [1.0 / (rank + 1) ** exponent for rank in range(len(self.items))]
        self.cumulative = list(accumulate(weights))
        self.total = self.cumulative[-1]

    def __call__(self, rng: random.Random) -> str:
        return self.items[bisect(self.cumulative, rng.random() * self.total)]


# ---------------------------------------------------------------------------------------------------------------------
# Lexicon. Nouns and verbs are listed by lemma; plurals and verb forms are derived below.
# ---------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Topic:
    agents: _Choice  # animate nouns: subjects, sometimes objects
    things: _Choice  # inanimate nouns: objects, subjects of copular clauses
    places: _Choice  # nouns used after a preposition ("near the barn")
    transitive: _Choice
    intransitive: _Choice
    adjectives: _Choice


def _topic(agents: str, things: str, places: str, transitive: str, intransitive: str, adjectives: str) -> _Topic:
    return _Topic(*(_Choice(words) for words in (agents, things, places, transitive, intransitive, adjectives)))


TOPICS: dict[str, _Topic] = {
    "farm": _topic(
        "farmer dog horse cow goat sheep",
        "tractor fence bucket apple egg gate rope",
        "barn field yard pond",
        "feed chase milk pull fix",
        "bark graze",
        "muddy brown hungry lazy fat",
    ),
    "kitchen": _topic(
        "chef baker waiter guest child customer",
        "soup bread cake pie knife plate sandwich",
        "kitchen restaurant cafe bakery",
        "cook bake cut serve taste",
        "eat laugh",
        "hot fresh sweet spicy delicious",
    ),
    "city": _topic(
        "driver tourist cyclist mayor officer neighbor",
        "bus car taxi ticket map bike umbrella",
        "station street bridge square",
        "drive park cross stop follow",
        "walk hurry",
        "busy crowded yellow noisy narrow",
    ),
    "school": _topic(
        "teacher student principal girl boy tutor",
        "book lesson exam pencil essay question notebook",
        "classroom library school hall",
        "read write teach grade explain",
        "study listen",
        "difficult clever boring short easy",
    ),
    "sports": _topic(
        "player coach runner referee fan team",
        "ball match race medal game trophy whistle",
        "stadium gym track court",
        "kick win lose throw catch",
        "train jump",
        "fast strong tired young proud",
    ),
    "forest": _topic(
        "hiker bird fox bear deer rabbit",
        "tree nest trail rock flower tent leaf",
        "forest mountain lake valley",
        "climb hide notice photograph plant",
        "rest fly",
        "tall green wild cold dark",
    ),
    "office": _topic(
        "manager clerk engineer client boss lawyer",
        "report contract meeting computer email budget printer",
        "office bank building factory",
        "sign send review approve print",
        "work complain",
        "important annual expensive angry serious",
    ),
    "music": _topic(
        "singer painter band musician drummer artist",
        "song guitar piano painting concert album poem",
        "theater studio museum club",
        "play paint record sell practice",
        "dance perform",
        "beautiful loud famous colorful modern",
    ),
}
_TOPIC_NAMES = _Choice(list(TOPICS), weights=[1.0] * len(TOPICS))

# Words shared by all topics: they blur the topic signal a little, as function-like content words do in real text.
_SHARED_TRANSITIVE = _Choice("see like want find take bring buy love")
_SHARED_INTRANSITIVE = _Choice("wait arrive smile leave sit")
_SHARED_ADJECTIVES = _Choice("good big little happy new small strange red")
_SHARED_PLACES = _Choice("house garden park room town")
_NAMES = _Choice("anna tom maria james lucy david sarah peter")
_MANNER = _Choice("quickly slowly quietly carefully happily again together suddenly alone early")
_FREQUENCY = _Choice("often always never sometimes usually")
_INTENSIFIERS = _Choice("very too really quite so")
_PREPOSITIONS = _Choice(["in", "near", "at", "behind", "outside", "by", "inside", "next to", "in front of", "across"])
_MODALS = _Choice("can should must might could")
_SINGULAR_DETERMINERS = _Choice("the a the this his her that my their our every")
_PLURAL_DETERMINERS = _Choice(["the", "some", "many", "these", "two", "their", "three", "those", "our", "a few"])

# (token, agreement) for subject pronouns, and the object pronouns.
_SUBJECT_PRONOUNS = (("he", "3sg"), ("she", "3sg"), ("they", "pl"), ("we", "pl"), ("i", "1sg"), ("you", "pl"))
_PRONOUN_CHOICE = _Choice([str(i) for i in range(len(_SUBJECT_PRONOUNS))])
_OBJECT_PRONOUNS = _Choice("him her them it us me you")

# Time adverbials are the main surface cue of tense; a few are neutral.
_TIME = {
    tense: _Choice(adverbials.split("|"))
    for tense, adverbials in {
        "past": "yesterday|last night|last week|this morning|last year|two days ago|earlier|last summer|a week ago"
        "|on monday|on saturday",
        "present": "every day|every morning|on weekends|at night|every week|in the evening|on sundays|every summer"
        "|in the morning",
        "future": "tomorrow|next week|tonight|soon|next year|later|on friday|next summer|in the morning|on tuesday",
    }.items()
}
_TENSES = _Choice(["past", "present", "future"], weights=[0.45, 0.35, 0.2])


# ---------------------------------------------------------------------------------------------------------------------
# Morphology: plural nouns and verb forms, computed once at import.
# ---------------------------------------------------------------------------------------------------------------------

_IRREGULAR_PLURALS = {"child": "children", "sheep": "sheep", "deer": "deer", "knife": "knives", "leaf": "leaves"}
_IRREGULAR_PAST_PAIRS = (
    "feed:fed cut:cut drive:drove read:read write:wrote teach:taught win:won lose:lost throw:threw catch:caught "
    "hide:hid sell:sold see:saw find:found take:took bring:brought buy:bought eat:ate leave:left sit:sat "
    "send:sent fly:flew say:said think:thought know:knew"
)
_IRREGULAR_PAST = dict(pair.split(":") for pair in _IRREGULAR_PAST_PAIRS.split())
_DOUBLED = {"stop", "win", "cut", "sit", "plan"}  # final consonant doubles before -ed / -ing
_VOWELS = "aeiou"


def _plural(noun: str) -> str:
    if noun in _IRREGULAR_PLURALS:
        return _IRREGULAR_PLURALS[noun]
    if noun.endswith(("s", "x", "ch", "sh", "z")):
        return noun + "es"
    if noun.endswith("y") and noun[-2] not in _VOWELS:
        return noun[:-1] + "ies"
    return noun + "s"


def _verb_forms(base: str) -> tuple[str, str, str, str]:
    """(base, third person singular, past, present participle) of a verb."""
    if base.endswith(("s", "x", "ch", "sh", "z", "o")):
        third = base + "es"
    elif base.endswith("y") and base[-2] not in _VOWELS:
        third = base[:-1] + "ies"
    else:
        third = base + "s"
    stem = base + base[-1] if base in _DOUBLED else base
    if base in _IRREGULAR_PAST:
        past = _IRREGULAR_PAST[base]
    elif base.endswith("e"):
        past = base + "d"
    elif base.endswith("y") and base[-2] not in _VOWELS:
        past = base[:-1] + "ied"
    else:
        past = stem + "ed"
    if base.endswith("e") and not base.endswith("ee"):
        ing = base[:-1] + "ing"
    else:
        ing = stem + "ing"
    return base, third, past, ing


_ALL_VERBS = {verb for t in TOPICS.values() for verb in t.transitive.items + t.intransitive.items}
_ALL_VERBS |= set(_SHARED_TRANSITIVE.items + _SHARED_INTRANSITIVE.items) | {"say", "think", "know", "hope"}
VERB_FORMS = {verb: _verb_forms(verb) for verb in sorted(_ALL_VERBS)}
_ALL_NOUNS = {noun for t in TOPICS.values() for noun in t.agents.items + t.things.items}
PLURALS = {noun: _plural(noun) for noun in sorted(_ALL_NOUNS)}

_BE = {"present": {"1sg": "am", "3sg": "is", "pl": "are"}, "past": {"1sg": "was", "3sg": "was", "pl": "were"}}
_DO = {"present": {"1sg": "do", "3sg": "does", "pl": "do"}, "past": {"1sg": "did", "3sg": "did", "pl": "did"}}
# PTB splits contractions: "doesn't" -> "does n't", "won't" -> "wo n't", "can't" -> "ca n't".
_NEGATED = {"will": "wo n't", "can": "ca n't"}


def _negate(aux: str, contracted: bool) -> list[str]:
    if not contracted or aux in ("am", "might"):  # no "amn't", and "mightn't" is rare
        return [aux, "not"]
    return _NEGATED.get(aux, aux + " n't").split()


# ---------------------------------------------------------------------------------------------------------------------
# Grammar.
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class _Clause:
    """The parts of one clause, kept apart so that it can be realised as a statement or as a question."""

    subject: list[str]
    agreement: str  # "1sg", "3sg" or "pl"
    verb: str  # a lemma, or "be" for a copular clause
    tense: str
    aspect: str  # "simple", "progressive" or "modal"
    complement: list[str]  # the object, or the adjective of a copular clause
    object_is_animate: bool = False
    manner: list[str] | None = None
    place: list[str] | None = None
    time: list[str] | None = None


class _SentenceMaker:
    """Draws sentences from the grammar with one `random.Random`, so output depends only on the seed."""

    def __init__(self, seed: int):
        self.rng = random.Random(seed)

    def chance(self, probability: float) -> bool:
        return self.rng.random() < probability

    # --- words and phrases -------------------------------------------------------------------------------------------

    def word(self, topic_choice: _Choice, shared_choice: _Choice, p_shared: float = 0.2) -> str:
        return (shared_choice if self.chance(p_shared) else topic_choice)(self.rng)

    def adjective(self, topic: _Topic) -> str:
        return self.word(topic.adjectives, _SHARED_ADJECTIVES, 0.3)

    def noun_phrase(self, topic: _Topic, animate: bool, plural: bool) -> list[str]:
        """Determiner, optional adjectives and a noun; sometimes a possessor ("the chef 's sharp knife")."""
        noun = (topic.agents if animate else topic.things)(self.rng)
        words = [PLURALS[noun] if plural else noun]
        if self.chance(0.3):
            words.insert(0, self.adjective(topic))
            if self.chance(0.1):
                words.insert(0, self.adjective(topic))
        if not plural and self.chance(0.04):
            return ["the", topic.agents(self.rng), "'s", *words]
        determiner = (_PLURAL_DETERMINERS if plural else _SINGULAR_DETERMINERS)(self.rng)
        if determiner == "a" and words[0][0] in _VOWELS:
            determiner = "an"
        return [*determiner.split(), *words]

    def subject(self, topic: _Topic, animate: bool = True) -> tuple[list[str], str]:
        """A subject and its agreement class: a name, a pronoun, or a noun phrase."""
        if animate:
            draw = self.rng.random()
            if draw < 0.12:
                return [_NAMES(self.rng)], "3sg"
            if draw < 0.27:
                pronoun, agreement = _SUBJECT_PRONOUNS[int(_PRONOUN_CHOICE(self.rng))]
                return [pronoun], agreement
        plural = self.chance(0.3)
        return self.noun_phrase(topic, animate, plural), "pl" if plural else "3sg"

    def object(self, topic: _Topic) -> tuple[list[str], bool]:
        draw = self.rng.random()
        if draw < 0.07:
            return [_OBJECT_PRONOUNS(self.rng)], True
        if draw < 0.14:
            return [_NAMES(self.rng)], True
        animate = draw < 0.35
        return self.noun_phrase(topic, animate, plural=self.chance(0.3)), animate

    def place(self, topic: _Topic) -> list[str]:
        noun = self.word(topic.places, _SHARED_PLACES, 0.2)
        return [*_PREPOSITIONS(self.rng).split(), "the", noun]

    # --- clauses -----------------------------------------------------------------------------------------------------

    def clause(
        self,
        topic: _Topic,
        tense: str,
        subject: tuple[list[str], str] | None = None,
        animate: bool = True,
        with_time: bool = True,
    ) -> _Clause:
        """A random clause: transitive, intransitive or copular, with optional adverbials."""
        subject_words, agreement = subject or self.subject(topic, animate)
        draw = self.rng.random()
        aspect = "simple"
        if self.chance(0.15):
            aspect = "progressive"
        elif tense != "past" and self.chance(0.1):
            aspect = "modal"
        if not animate or draw < 0.15:
            adjective = [self.adjective(topic)]
            if self.chance(0.3):
                adjective.insert(0, _INTENSIFIERS(self.rng))
            clause = _Clause(subject_words, agreement, "be", tense, "simple", adjective)
        elif draw < 0.7:
            verb = self.word(topic.transitive, _SHARED_TRANSITIVE, 0.25)
            obj, obj_animate = self.object(topic)
            clause = _Clause(subject_words, agreement, verb, tense, aspect, obj, obj_animate)
        else:
            verb = self.word(topic.intransitive, _SHARED_INTRANSITIVE, 0.3)
            clause = _Clause(subject_words, agreement, verb, tense, aspect, [])
            if self.chance(0.3):
                clause.manner = [_MANNER(self.rng)]
        if self.chance(0.4):
            clause.place = self.place(topic)
        if with_time and self.chance(0.35):
            clause.time = _TIME[tense](self.rng).split()
        return clause

    def verb_group(self, clause: _Clause, negate: bool = False, invert: bool = False) -> tuple[list[str], list[str]]:
        """(auxiliary, rest of the verb group). The auxiliary is empty only for plain affirmative statements."""
        tense, agreement = clause.tense, clause.agreement
        if clause.verb == "be":
            aux, main = (["will"], ["be"]) if tense == "future" else ([_BE[tense][agreement]], [])
        else:
            base, third, past, ing = VERB_FORMS[clause.verb]
            if clause.aspect == "progressive":
                aux, main = (["will"], ["be", ing]) if tense == "future" else ([_BE[tense][agreement]], [ing])
            elif clause.aspect == "modal":
                aux, main = [_MODALS(self.rng)], [base]
            elif tense == "future":
                aux, main = ["will"], [base]
            elif negate or invert:  # do-support: "did the dog bark ?", "the dog does n't bark"
                aux, main = [_DO[tense][agreement]], [base]
            else:
                finite = past if tense == "past" else (third if agreement == "3sg" else base)
                aux, main = [], [finite]
        if negate:
            aux = _negate(aux[0], contracted=invert or self.chance(0.7))
        return aux, main

    def statement(self, clause: _Clause, negate: bool = False) -> list[str]:
        aux, main = self.verb_group(clause, negate)
        if not aux and clause.tense == "present" and self.chance(0.15):
            aux = [_FREQUENCY(self.rng)]  # "the dog often sleeps"
        return [*clause.subject, *aux, *main, *clause.complement, *self.adverbials(clause)]

    @staticmethod
    def adverbials(clause: _Clause, drop: str = "") -> list[str]:
        words = []
        for name in ("manner", "place", "time"):
            part = getattr(clause, name)
            if part and name != drop:
                words += part
        return words

    def question(self, clause: _Clause) -> list[str]:
        """A yes/no question or a wh-question about the object, place, time, reason or subject."""
        options = ["yes-no", "why"]
        if clause.verb != "be" and clause.complement:
            options.append("object")
        if clause.place:
            options.append("where")
        if clause.time:
            options.append("when")
        if clause.agreement == "3sg" and clause.verb != "be":
            options.append("who")
        kind = options[int(self.rng.random() * len(options))]
        if kind == "who":  # subject question: no inversion, "who fed the goats ?"
            aux, main = self.verb_group(clause)
            return ["who", *aux, *main, *clause.complement, *self.adverbials(clause), "?"]
        aux, main = self.verb_group(clause, negate=kind == "yes-no" and self.chance(0.1), invert=True)
        if kind == "object":
            wh, complement, drop = ["who" if clause.object_is_animate else "what"], [], ""
        else:
            wh = {"yes-no": [], "why": ["why"], "where": ["where"], "when": ["when"]}[kind]
            complement, drop = clause.complement, {"where": "place", "when": "time"}.get(kind, "")
        return [*wh, *aux, *clause.subject, *main, *complement, *self.adverbials(clause, drop), "?"]

    # --- sentence types ----------------------------------------------------------------------------------------------

    def simple(self, topic: _Topic, tense: str) -> list[str]:
        clause = self.clause(topic, tense)
        if self.chance(0.2):
            clause.time = None
            return [*_TIME[tense](self.rng).split(), ",", *self.statement(clause, negate=self.chance(0.15)), "."]
        return [*self.statement(clause, negate=self.chance(0.2)), "."]

    def about_thing(self, topic: _Topic, tense: str) -> list[str]:
        """A copular clause about an object: "the soup was too hot ."."""
        return [*self.statement(self.clause(topic, tense, animate=False), negate=self.chance(0.2)), "."]

    def interrogative(self, topic: _Topic, tense: str) -> list[str]:
        return self.question(self.clause(topic, tense, animate=not self.chance(0.15)))

    def second_clause(self, topic: _Topic, tense: str, first: _Clause) -> _Clause:
        """The next clause mostly keeps topic and tense, and sometimes refers back to the subject by pronoun."""
        if self.chance(0.15):
            topic = TOPICS[_TOPIC_NAMES(self.rng)]
        if self.chance(0.2):
            tense = _TENSES(self.rng)
        subject = None
        if self.chance(0.25) and first.subject[0] not in ("i", "you", "we", "they", "he", "she"):
            subject = (["they"], "pl") if first.agreement == "pl" else ([self.rng.choice(("he", "she"))], "3sg")
        return self.clause(topic, tense, subject, with_time=False)

    def coordinated(self, topic: _Topic, tense: str) -> list[str]:
        first = self.clause(topic, tense, with_time=False)
        second = self.second_clause(topic, tense, first)
        conjunction = self.rng.choice((", and", ", but", ", so", "because", "while", "when", "after", "before"))
        if conjunction in ("when", "after", "before") and self.chance(0.4):  # fronted: "when x , y ."
            return [conjunction, *self.statement(first), ",", *self.statement(second), "."]
        return [*self.statement(first), *conjunction.split(), *self.statement(second, self.chance(0.15)), "."]

    def conditional(self, topic: _Topic, tense: str) -> list[str]:
        """An "if" clause in the present, then the future: a fixed tense pattern across two clauses."""
        condition = self.clause(topic, "present", with_time=False)
        condition.aspect = "simple"
        result = self.second_clause(topic, "future", condition)
        result.tense = "future"
        return ["if", *self.statement(condition), ",", *self.statement(result, self.chance(0.15)), "."]

    def relative(self, topic: _Topic, tense: str) -> list[str]:
        """A subject with a relative clause: "the chef who baked the bread likes the soup ."."""
        plural = self.chance(0.3)
        head = self.noun_phrase(topic, animate=True, plural=plural)
        agreement = "pl" if plural else "3sg"
        inner = self.clause(topic, tense, (["who" if self.chance(0.6) else "that"], agreement), with_time=False)
        inner.place = None
        outer = self.clause(topic, tense, ([*head, *self.statement(inner)], agreement))
        return [*self.statement(outer, negate=self.chance(0.1)), "."]

    def reported(self, topic: _Topic, tense: str) -> list[str]:
        speaker, agreement = self.subject(topic)
        verb = self.rng.choice(("say", "think", "know", "hope"))
        base, third, past, _ = VERB_FORMS[verb]
        reporting = past if tense == "past" else (third if agreement == "3sg" else base)
        that = ["that"] if self.chance(0.6) else []
        inner = self.clause(topic, tense if self.chance(0.8) else _TENSES(self.rng))
        return [*speaker, reporting, *that, *self.statement(inner, negate=self.chance(0.15)), "."]

    def existential(self, topic: _Topic, tense: str) -> list[str]:
        """An existential: "there was a red tractor near the barn ." or "is there ... ?"."""
        plural = self.chance(0.4)
        noun = (topic.agents if self.chance(0.4) else topic.things)(self.rng)
        words = [PLURALS[noun] if plural else noun]
        if self.chance(0.4):
            words.insert(0, self.adjective(topic))
        if plural:
            determiner = self.rng.choice(("some", "many", "two", "three", "no"))
        else:
            determiner = "an" if words[0][0] in _VOWELS else "a"
        be = ["will", "be"] if tense == "future" else [_BE[tense]["pl" if plural else "3sg"]]
        place = self.place(topic)
        time = _TIME[tense](self.rng).split() if self.chance(0.3) else []
        if self.chance(0.2):
            return [be[0], "there", *be[1:], determiner, *words, *place, *time, "?"]
        return ["there", *be, determiner, *words, *place, *time, "."]

    def imperative(self, topic: _Topic, tense: str) -> list[str]:
        verb = self.word(topic.transitive, _SHARED_TRANSITIVE, 0.25)
        obj, _ = self.object(topic)
        start = self.rng.choice((["please"], [], ["let", "'s"], ["do", "n't"]))
        place = self.place(topic) if self.chance(0.4) else []
        return [*start, verb, *obj, *place, "."]

    def exclamation(self, topic: _Topic, tense: str) -> list[str]:
        noun = topic.things(self.rng)
        adjective = self.adjective(topic)
        if self.chance(0.5):
            return ["what", "an" if adjective[0] in _VOWELS else "a", adjective, noun, "!"]
        be = {"past": "was", "present": "is", "future": "will be"}[tense]
        return ["how", adjective, "the", noun, *be.split(), "!"]

    def sentence(self) -> list[str]:
        topic = TOPICS[_TOPIC_NAMES(self.rng)]
        tense = _TENSES(self.rng)
        return _SENTENCE_TYPES(self.rng)(self, topic, tense)


_SENTENCE_TYPE_WEIGHTS = {
    _SentenceMaker.simple: 0.38,
    _SentenceMaker.interrogative: 0.14,
    _SentenceMaker.coordinated: 0.13,
    _SentenceMaker.relative: 0.07,
    _SentenceMaker.about_thing: 0.07,
    _SentenceMaker.reported: 0.06,
    _SentenceMaker.existential: 0.05,
    _SentenceMaker.conditional: 0.04,
    _SentenceMaker.imperative: 0.04,
    _SentenceMaker.exclamation: 0.02,
}
_SENTENCE_TYPES = _Choice(list(_SENTENCE_TYPE_WEIGHTS), weights=list(_SENTENCE_TYPE_WEIGHTS.values()))


# ---------------------------------------------------------------------------------------------------------------------
# Public API.
# ---------------------------------------------------------------------------------------------------------------------


def _sentence_stream(seed: int) -> Iterator[str]:
    """An endless, seeded stream of sentences of MIN_TOKENS..MAX_TOKENS tokens."""
    maker = _SentenceMaker(seed)
    while True:
        tokens = maker.sentence()
        if MIN_TOKENS <= len(tokens) <= MAX_TOKENS:  # rejection keeps the length range exact
            yield " ".join(tokens)


def builtin_sentences(num_sentences: int, seed: int = 0) -> list[str]:
    """`num_sentences` sentences from the grammar; the same seed always gives the same list.

    Sentences may repeat (rarely); `load_builtin_corpus` removes repeats.
    """
    stream = _sentence_stream(seed)
    return [next(stream) for _ in range(num_sentences)]


def load_builtin_corpus(num_train: int = 20000, num_validation: int = 1000, num_test: int = 1000, seed: int = 0):
    """The built-in corpus as a `datasets.DatasetDict` with splits train / validation / test and a "text" column.

    Each sentence occurs once in the whole corpus, so the splits are disjoint.
    """
    from datasets import Dataset, DatasetDict

    sizes = {"train": num_train, "validation": num_validation, "test": num_test}
    if any(size < 0 for size in sizes.values()):
        raise ValueError(f"split sizes must be >= 0, got {sizes}")
    wanted = sum(sizes.values())
    seen: set[str] = set()
    unique: list[str] = []
    stream = _sentence_stream(seed)
    # The grammar has far more sentences than anyone asks for, but bound the loop so a bug cannot hang a test.
    for _ in range(10 * wanted + 1000):
        if len(unique) == wanted:
            break
        sentence = next(stream)
        if sentence not in seen:
            seen.add(sentence)
            unique.append(sentence)
    else:
        raise RuntimeError(f"the built-in grammar produced only {len(unique)} distinct sentences of {wanted} asked")
    splits, start = {}, 0
    for name, size in sizes.items():
        splits[name] = Dataset.from_dict({"text": unique[start : start + size]})
        start += size
    return DatasetDict(splits)


register_dataset("builtin", load_builtin_corpus)
