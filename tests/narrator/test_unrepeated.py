"""The narrator's grammar against copied runs: its language, read by a matcher written here for the
GBNF it emits, is exactly the replies without a banned 4-word run; the real embedded server
parses it and its replies under it copy none of the runs the model wrote without it."""

import random
import re

import pytest
from llm_fixtures import Relay, scenes
from test_narrate import stage

from metabgm_narrator import unrepeated
from metabgm_narrator.unrepeated import banned, grammar, grams, words

TOKEN = re.compile(r"\[(?:[^\]])*\]|\(|\)\??|\||[A-Za-z0-9-]+\*?")
RECENT = [
    "You move through the snowy plains, wind in your face.",
    "You keep to the edge of the forest. The night is long, and you keep moving.",
    "Wind in your face, you cross the river at dawn.",
]


def parse(text: str) -> dict[str, list]:
    """Rule name -> alternatives; an alternative is a list of ("cls", chars, negated, star),
    ("ref", name, star) or ("opt", alternatives)."""

    def alternatives(tokens: list[str], i: int) -> tuple[list, int]:
        alts, seq = [], []
        while i < len(tokens) and not tokens[i].startswith(")"):
            t = tokens[i]
            if t == "|":
                alts.append(seq)
                seq = []
            elif t == "(":
                inner, i = alternatives(tokens, i + 1)
                assert tokens[i] == ")?", "only ( ... )? groups are emitted"
                seq.append(("opt", inner))
            elif t.startswith("["):
                negated = t.startswith("[^")
                seq.append(("cls", t[2 if negated else 1 : -1], negated, False))
            else:
                seq.append(("ref", t.rstrip("*"), t.endswith("*")))
            i += 1
        return [*alts, seq], i

    rules = {}
    for line in text.splitlines():
        name, body = line.split(" ::= ")
        rules[name], _ = alternatives(TOKEN.findall(body), 0)
    return rules


def classes(chars: str) -> set[str]:
    out, i = set(), 0
    while i < len(chars):
        if i + 2 < len(chars) and chars[i + 1] == "-":
            out |= {chr(c) for c in range(ord(chars[i]), ord(chars[i + 2]) + 1)}
            i += 3
        else:
            out.add(chars[i])
            i += 1
    return out


def accepts(rules: dict[str, list], text: str) -> bool:
    """Whether the grammar's root matches the whole text: the sets of end positions of each
    alternative list from each position, memoized (every rule consumes a character before it
    recurses, so there is no left recursion)."""
    sets, memo = {}, {}

    def char_ok(item, c: str) -> bool:
        if item[0] == "ref":
            item = rules[item[1]][0][0]  # a one-class rule (`w`, `sep`)
        if item[1] not in sets:
            sets[item[1]] = classes(item[1])
        return (c in sets[item[1]]) != item[2]

    def ends(alts: list, pos: int) -> frozenset[int]:
        if (id(alts), pos) not in memo:
            memo[id(alts), pos] = frozenset(e for seq in alts for e in seq_ends(seq, 0, pos))
        return memo[id(alts), pos]

    def seq_ends(seq: list, k: int, pos: int) -> set[int]:
        if k == len(seq):
            return {pos}
        item, out = seq[k], set()
        if item[0] == "opt":
            starts = {pos} | ends(item[1], pos)
        elif item[0] == "ref" and item[1] in ("w", "sep") or item[0] == "cls":
            starts = {pos + 1} if pos < len(text) and char_ok(item, text[pos]) else set()
            if item[0] == "ref" and item[2]:  # w*: any run of word characters
                starts, p = {pos}, pos
                while p < len(text) and char_ok(item, text[p]):
                    p += 1
                    starts.add(p)
        else:
            starts = ends(rules[item[1]], pos)
        for s in starts:
            out |= seq_ends(seq, k + 1, s)
        return out

    return len(text) in ends(rules["root"], 0)


def copies(text: str, runs: set) -> bool:
    return bool(grams(words(text)) & runs)


def barred(text: str, runs: set) -> bool:
    """What the grammar refuses: a word that completes a banned run, or begins with its last word."""
    ws = words(text)
    return any(g[:3] == tuple(ws[i - 3 : i]) and ws[i].startswith(g[3]) for i in range(3, len(ws)) for g in runs)


def test_banned_runs_are_the_guards_words_per_text():
    runs = banned(["You MOVE, through the snow.", "the snow falls"])
    assert ("you", "move", "through", "the") in runs and ("through", "the", "snow", "falls") not in runs
    assert banned(["too short here"]) == set()


def test_the_grammar_accepts_exactly_the_replies_it_does_not_bar():
    runs = banned(RECENT)
    rules = parse(grammar(runs))
    vocab = sorted({w for t in RECENT for w in words(t)}) + ["there", "forests", "dawns", "you're", "snowy"]
    rng = random.Random(7)
    texts = [
        "You move through the snowy plains again.",  # copies "you move through the"
        "You move across the snowy plains.",
        "You move, through the snowy plains!",  # punctuation does not break a run
        "YOU MOVE THROUGH THE NIGHT.",  # nor does case
        "You keep to the edge of the river.",  # "keep to the edge" copied
        "Thereafter you keep to the forests edge.",
        "You moved through the snowy plains.",  # "moved" is another word
    ]
    for _ in range(400):
        ws = words(rng.choice(RECENT))
        start = rng.randrange(len(ws))
        slice_ = ws[start : start + rng.randint(2, 5)]  # a run of a recent narrative, maybe a copy
        noise = [rng.choice(vocab) for _ in range(rng.randint(0, 4))]
        cut = rng.randint(0, len(noise))
        texts.append(" ".join(noise[:cut] + slice_ + noise[cut:]) + rng.choice([".", ",", ""]))
    verdicts = [(t, accepts(rules, t), not barred(t, runs)) for t in texts]
    assert all(barred(t, runs) for t in texts if copies(t, runs))
    assert [t for t, got, want in verdicts if got != want] == []
    assert 50 < sum(ok for _, ok, _ in verdicts) < len(texts) - 50  # both kinds were tried


def test_a_word_that_would_complete_a_run_cannot_be_begun():
    """Where "the" completes "you move through the", no word starting "the" is offered: a model
    cannot escape the run by gluing letters on ("thefoundland", seen before this rule)."""
    rules = parse(grammar(banned(["You move through the snow."])))
    assert not accepts(rules, "You move through thefoundland.")
    assert not accepts(rules, "You move through there.")
    assert accepts(rules, "You move through snow.") and accepts(rules, "Then you move through.")
    assert accepts(rules, "There you move, the snow.")  # elsewhere "the..." words are free


def test_the_embedded_server_writes_none_of_the_runs_it_wrote_without_the_grammar(llm_server, redis_url):
    """The real llama.cpp parses the grammar (a 400 would raise here), and its greedy reply under
    it avoids every 4-word run of its own greedy reply without it."""
    with Relay(llm_server) as relay:
        off = stage(relay.url, redis_url, narrator_unrepeated=False, narrator_attempts=1)
        on = stage(relay.url, redis_url, narrator_attempts=1)
        tried = 0
        for scene in scenes(8)[:4]:
            first = off.client.chat(off.messages(scene, []), model="narrator", max_tokens=40, stop=["\n"],
                                    sampler=off.sampler([])).text  # fmt: skip
            runs = banned([first])
            if not runs:
                continue
            tried += 1
            again = on.client.chat(on.messages(scene, []), model="narrator", max_tokens=40, stop=["\n"],
                                   sampler=on.sampler([first])).text  # fmt: skip
            assert "grammar" in relay.bodies[-1] and "grammar" not in relay.bodies[-2]
            assert again and not copies(again, runs), (first, again)
        assert tried >= 2


def test_the_newest_narratives_runs_are_barred_first_and_at_most_so_many():
    oldest, middle, last = [" ".join(f"w{i}x{j}" for j in range(20)) for i in range(3)]  # 17 runs each
    assert unrepeated.newest([oldest, middle, last], most=40) == banned([middle, last])
    assert unrepeated.newest(RECENT) == banned(RECENT)  # three narratives as written fit


@pytest.mark.parametrize("recent", [[], ["Too short."]])
def test_no_grammar_without_runs_to_bar(recent, redis_url):
    st = stage("http://127.0.0.1:9/v1", redis_url)
    assert "grammar" not in st.sampler(recent)
    assert unrepeated.grammar(set()).startswith("root ::= s0")
