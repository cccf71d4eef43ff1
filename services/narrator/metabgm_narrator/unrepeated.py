"""A llama.cpp grammar (GBNF) under which a reply cannot copy a 4-word run of given texts.

Rules:
- Words are the guard's: runs of letters, digits and apostrophes, compared lowercased; anything
  else separates them. A banned run is 4 consecutive words of one text (runs do not span texts).
  The runs barred are the newest texts', at most `MOST_RUNS` (a grammar grows with its runs).
- The grammar is a word automaton (Aho-Corasick over word tuples): its state is the longest tail
  of the reply's words that begins a banned run, and a word that would complete a banned run is
  not offered there, nor any word beginning with it: decoding goes a token at a time, and a model
  barred from " the" took " the" as the start of another word and glued letters on
  ("thefoundland"). Every other reply, any length, stays possible.
- A word of the banned runs is spelled out (either case per letter) and must end at a separator;
  any other word is matched by a trie of those words' complement, so each word has one reading.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

N = 4
MOST_RUNS = 64  # a grammar's size grows with its runs: 3 recent narratives have 23 at the median, 61 at most
WORD_RE = re.compile(r"[a-z0-9']+")
WORD_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789'"

Gram = tuple[str, ...]


def words(text: str) -> list[str]:
    return WORD_RE.findall(text.lower())


def grams(ws: list[str], n: int = N) -> set[Gram]:
    return {tuple(ws[i : i + n]) for i in range(len(ws) - n + 1)}


def banned(texts: Iterable[str], n: int = N) -> set[Gram]:
    return {g for t in texts for g in grams(words(t), n)}


def newest(texts: Sequence[str], most: int = MOST_RUNS) -> set[Gram]:
    """The runs of the newest texts (last in `texts`), whole texts, as many as fit in `most`."""
    out: set[Gram] = set()
    for t in reversed(texts):
        runs = grams(words(t))
        if out and len(out | runs) > most:
            break
        out |= runs
    return out


def _char(c: str) -> str:
    return f"[{c}{c.upper()}]" if c.isalpha() else f"[{c}]"


def _literal(word: str) -> str:
    return " ".join(_char(c) for c in word)


def _class(chars: str) -> str:
    out = "".join(c + c.upper() if c.isalpha() else c for c in sorted(chars))
    return f"[{out}]"


class Trie(dict[str, int]):
    """The prefixes of a vocabulary, numbered ("" is 0), with each one's next letters."""

    def __init__(self, vocab: set[str]) -> None:
        super().__init__({"": 0})
        self.vocab, self.nexts = vocab, {"": set()}
        for w in sorted(vocab):
            for i in range(1, len(w) + 1):
                self.setdefault(w[:i], len(self))
                self.nexts.setdefault(w[:i], set())
                self.nexts[w[: i - 1]].add(w[i - 1])


def _node(name: str, nodes: Trie, prefix: str, avoid: set[str]) -> str:
    """One trie node of "a word not in the vocabulary, not starting with a word of `avoid`": the
    path of an avoided word is the rule's own (`name-<i>`), the rest of the trie the shared `o<i>`."""
    alts = []
    nexts = sorted(nodes.nexts[prefix])
    for c in nexts:
        nxt = prefix + c
        if nxt in avoid:
            continue
        own = any(a.startswith(nxt) for a in avoid)
        alts.append(f"{_char(c)} {name if own else 'o'}{nodes[nxt]}")
    free = "".join(c for c in WORD_CHARS if c not in nexts)
    if free:
        alts.append(f"{_class(free)} w*")
    body = " | ".join(alts)
    return f"( {body} )?" if prefix and prefix not in nodes.vocab else body


def _other(name: str, nodes: Trie, avoid: set[str]) -> list[str]:
    """Rules `<name><i>` (`<name>0` the root): one word outside the vocabulary and `avoid`'s prefixes."""
    path = {a[:i] for a in avoid for i in range(len(a))}
    return [f"{name}{nodes[p]} ::= {_node(name, nodes, p, avoid)}" for p in sorted(path, key=len)]


def grammar(runs: set[Gram]) -> str:
    """The GBNF of every reply containing none of `runs` (word tuples of one length)."""
    n = len(next(iter(runs))) if runs else N
    states: dict[Gram, int] = {(): 0}
    for g in sorted(runs):
        for i in range(1, n):
            states.setdefault(g[:i], len(states))
    vocab = {w for g in runs for w in g}
    nodes = Trie(vocab)

    def step(q: Gram, w: str) -> Gram:
        s = (*q, w)
        return next(s[i:] for i in range(len(s) + 1) if s[i:] in states)

    rules = ["root ::= s0", "w ::= " + _class(WORD_CHARS), "sep ::= [^a-zA-Z0-9']"]
    rules += [f"o{i} ::= {_node('o', nodes, p, set())}" for p, i in nodes.items()]
    for q, i in states.items():
        avoid = {g[-1] for g in runs if g[:-1] == q}
        other = f"x{i}-" if avoid else "o"
        if avoid:
            rules += _other(other, nodes, avoid)
        alts = [f"sep s{i}", f"{other}0 a0"]
        free = [w for w in sorted(vocab) if not any(w.startswith(a) for a in avoid)]
        alts += [f"{_literal(w)} a{states[step(q, w)]}" for w in free]
        rules.append(f"s{i} ::= ( " + " | ".join(alts) + " )?")
        rules.append(f"a{i} ::= ( sep s{i} )?")
    return "\n".join(rules) + "\n"
