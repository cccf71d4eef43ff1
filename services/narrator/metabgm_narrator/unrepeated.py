"""A llama.cpp grammar (GBNF) under which a reply cannot copy a 4-word run of given texts.

Rules:
- Words are the guard's: runs of letters, digits and apostrophes, compared lowercased; anything
  else separates them. A banned run is 4 consecutive words of one text (runs do not span texts).
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

N = 4
WORD_RE = re.compile(r"[a-z0-9']+")
WORD_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789'"

Gram = tuple[str, ...]


def words(text: str) -> list[str]:
    return WORD_RE.findall(text.lower())


def grams(ws: list[str], n: int = N) -> set[Gram]:
    return {tuple(ws[i : i + n]) for i in range(len(ws) - n + 1)}


def banned(texts: list[str], n: int = N) -> set[Gram]:
    return {g for t in texts for g in grams(words(t), n)}


def _char(c: str) -> str:
    return f"[{c}{c.upper()}]" if c.isalpha() else f"[{c}]"


def _literal(word: str) -> str:
    return " ".join(_char(c) for c in word)


def _class(chars: str) -> str:
    out = "".join(c + c.upper() if c.isalpha() else c for c in sorted(chars))
    return f"[{out}]"


def _children(nodes: dict[str, int], prefix: str) -> list[str]:
    return sorted({w[len(prefix)] for w in nodes if len(w) == len(prefix) + 1 and w.startswith(prefix)})


def _trie(vocab: set[str]) -> dict[str, int]:
    nodes: dict[str, int] = {"": 0}
    for w in sorted(vocab):
        for i in range(1, len(w) + 1):
            nodes.setdefault(w[:i], len(nodes))
    return nodes


def _node(name: str, nodes: dict[str, int], prefix: str, vocab: set[str], avoid: set[str]) -> str:
    """One trie node of "a word not in `vocab`, not starting with a word of `avoid`": the path
    of an avoided word is the rule's own (`name-<i>`), the rest of the trie is the shared `o<i>`."""
    alts = []
    for c in _children(nodes, prefix):
        nxt = prefix + c
        if nxt in avoid:
            continue
        own = any(a.startswith(nxt) for a in avoid)
        alts.append(f"{_char(c)} {name if own else 'o'}{nodes[nxt]}")
    free = "".join(c for c in WORD_CHARS if c not in _children(nodes, prefix))
    if free:
        alts.append(f"{_class(free)} w*")
    body = " | ".join(alts)
    return f"( {body} )?" if prefix and prefix not in vocab else body


def _other(name: str, nodes: dict[str, int], vocab: set[str], avoid: set[str]) -> list[str]:
    """Rules `<name><i>` (`<name>0` the root) of one word outside `vocab` and `avoid`'s prefixes."""
    path = {a[:i] for a in avoid for i in range(len(a))}
    return [f"{name}{nodes[p]} ::= {_node(name, nodes, p, vocab, avoid)}" for p in sorted(path, key=len)]


def grammar(runs: set[Gram]) -> str:
    """The GBNF of every reply containing none of `runs` (word tuples of one length)."""
    n = len(next(iter(runs))) if runs else N
    states: dict[Gram, int] = {(): 0}
    for g in sorted(runs):
        for i in range(1, n):
            states.setdefault(g[:i], len(states))
    vocab = {w for g in runs for w in g}
    nodes = _trie(vocab)

    def step(q: Gram, w: str) -> Gram:
        s = (*q, w)
        return next(s[i:] for i in range(len(s) + 1) if s[i:] in states)

    rules = ["root ::= s0", "w ::= " + _class(WORD_CHARS), "sep ::= [^a-zA-Z0-9']"]
    rules += [f"o{i} ::= {_node('o', nodes, p, vocab, set())}" for p, i in nodes.items()]
    for q, i in states.items():
        avoid = {g[-1] for g in runs if g[:-1] == q}
        other = f"x{i}-" if avoid else "o"
        if avoid:
            rules += _other(other, nodes, vocab, avoid)
        alts = [f"sep s{i}", f"{other}0 a0"]
        free = [w for w in sorted(vocab) if not any(w.startswith(a) for a in avoid)]
        alts += [f"{_literal(w)} a{states[step(q, w)]}" for w in free]
        rules.append(f"s{i} ::= ( " + " | ".join(alts) + " )?")
        rules.append(f"a{i} ::= ( sep s{i} )?")
    return "\n".join(rules) + "\n"
