"""German->English phrase pairs from Debian's dict-de-en (the Ding dictionary, TU Chemnitz, GPL-2+), read as dictd.

A dictd database is an index (headword, offset, length) and a ``.dict.dz`` body; dictzip is gzip with a random-access
table in the header, so ``gzip`` reads it whole. In the body every German headword is an entry of its own: the
headword at column 0, a line of grammar notes indented by one space (or empty), then the English, indented by three
spaces and wrapped at column 0 when long. Ding writes one line per sense, "Aal; Aale | eel; eels", which dictfmt
splits into one entry per German form, each carrying the whole English line; consecutive entries with the same English
are one such line, and where the counts agree the i-th German form goes with the i-th English alternative.

The entries are found with one regular expression over the body (no index needed): an entry starts where a column-0
line is followed by a notes line and a three-space line, which a wrapped continuation line never is.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

DEFAULT_DIR = Path("/usr/share/dictd")
DIR_ENV = "TAILMARK_DICTD_DIR"  # where else to look (a copy, or a test's empty folder)
DICT_FILE = "german-english.dict.dz"
DICT_SHA256 = "cf6b6cb07465429e5d7ecedcf0c3ba45ef594bf8a06be48435494b0c442d6eb3"  # dict-de-en 1.9-6 (bookworm)
INSTALL = "apt-get install dict-de-en"

# The alphabet a kept pair may use (on both sides): letters, German umlauts and ß, space, hyphen, apostrophe. It is
# fixed here, not read from the data, so the model's vocabulary is known before the clock starts.
ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyzÄÖÜäöüß '-"
_ALLOWED = re.compile(f"[{re.escape(ALPHABET)}]+")
_NOTE = re.compile(r"\[[^\]]*\]|\{[^}]*\}|\([^)]*\)|<[^>]*>")  # [coll.], {pl}, (of a ship), <Aalmolch>
_ENTRY_START = re.compile(r"^([^ \n][^\n]*)\n(?: [^ \n][^\n]*)?\n   ", re.MULTILINE)  # headword, notes, English


@dataclass(frozen=True, slots=True)
class PhrasePairs:
    """The kept pairs, split once for all runs: ``train`` and ``held_out`` share no German source."""

    train: tuple[tuple[str, str], ...]
    held_out: tuple[tuple[str, str], ...]


def dict_path() -> Path:
    return Path(os.environ.get(DIR_ENV, DEFAULT_DIR)) / DICT_FILE


def read_entries(path: Path) -> Iterator[tuple[str, str]]:
    """(German headword, English text with whitespace collapsed) for every entry, in file order."""
    text = gzip.decompress(path.read_bytes()).decode("utf-8")
    starts = list(_ENTRY_START.finditer(text))
    ends = [match.start() for match in starts[1:]] + [len(text)]
    for match, end in zip(starts, ends, strict=True):
        if not match[1].startswith("00-database"):  # dictfmt's metadata entries
            yield match[1], " ".join(text[match.end() : end].split())


def clean(phrase: str) -> str | None:
    """The phrase without bracketed notes, or None where what is left uses characters outside ALPHABET."""
    bare = " ".join(_NOTE.sub(" ", phrase).split())
    return bare if bare and _ALLOWED.fullmatch(bare) else None


def aligned_pairs(entries: Iterator[tuple[str, str]]) -> Iterator[tuple[str, str]]:
    """One (German, English) pair per German form, aligned within each run of entries sharing their English."""
    group: list[str] = []
    english = None
    for german, text in [*entries, ("", None)]:  # the sentinel flushes the last group
        if text == english:
            group.append(german)
            continue
        if english is not None:
            alternatives = english.split(";")
            if len(alternatives) != len(group):  # synonyms on one side: each form takes the first alternative
                alternatives = alternatives[:1] * len(group)
            yield from zip(group, alternatives, strict=True)
        group, english = [german], text


def _held_out_rank(german: str) -> bytes:
    return hashlib.sha256(german.encode("utf-8")).digest()


def load_pairs(path: Path, max_chars: int, max_words: int, held_out: int) -> PhrasePairs:
    """Clean pairs of at most ``max_chars`` characters a side and ``max_words`` English words, each German source
    once (its first sense), split deterministically: the ``held_out`` sources whose sha256 sorts first are held out.
    """
    kept: dict[str, str] = {}
    for german, english in aligned_pairs(read_entries(path)):
        source, target = clean(german), clean(english)
        if source is None or target is None or source in kept:
            continue
        if len(source) <= max_chars and len(target) <= max_chars and len(target.split()) <= max_words:
            kept[source] = target
    ranked = sorted(kept, key=_held_out_rank)
    held = set(ranked[:held_out])
    train = tuple((s, t) for s, t in kept.items() if s not in held)
    return PhrasePairs(train, tuple((s, kept[s]) for s in ranked[:held_out]))
