"""The lm corpus: 114 top-level modules of CPython 3.11's standard library, read where Python installed them.

The modules are those byte-identical in CPython 3.11.2 (Debian 12's ``libpython3.11-stdlib``) and 3.11.7, pinned
by sha256 in ``corpus.sha256`` beside this file (``this.py``, rot13 text, left out). They are found without any
download: in the running interpreter's standard library when it is a 3.11, else in Debian's ``/usr/lib/python3.11``,
or wherever ``TAILMARK_LM_CORPUS_DIR`` points. Licence: the Python Software Foundation License (PSF-2.0).

The split is by file and fixed: in the manifest's (sorted) order, every tenth module from the first is held out
(12 modules, 365,418 bytes), the other 102 train (about 1.9 MB). Files are joined in that order into one byte
stream per side.
"""

from __future__ import annotations

import os
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from tailmark.training.workload import DataMissing

MANIFEST = Path(__file__).resolve().parent / "corpus.sha256"
DIR_ENV = "TAILMARK_LM_CORPUS_DIR"
DEBIAN_DIR = Path("/usr/lib/python3.11")
INSTALL = "apt-get install libpython3.11-stdlib"
HELD_OUT_EVERY = 10  # module i (manifest order) is held out when i % 10 == 0


def manifest() -> dict[str, str]:
    """File name -> pinned sha256, in the manifest's sorted order."""
    entries: dict[str, str] = {}
    for line in MANIFEST.read_text(encoding="ascii").splitlines():
        digest, name = line.split()
        entries[name] = digest
    return entries


def split_names(names: list[str]) -> tuple[list[str], list[str]]:
    """(train, held out): every ``HELD_OUT_EVERY``-th name from the first is held out; order kept."""
    held = [name for i, name in enumerate(names) if i % HELD_OUT_EVERY == 0]
    train = [name for i, name in enumerate(names) if i % HELD_OUT_EVERY != 0]
    return train, held


def candidate_dirs() -> list[Path]:
    if DIR_ENV in os.environ:
        return [Path(os.environ[DIR_ENV])]
    found = []
    if sys.version_info[:2] == (3, 11):
        found.append(Path(sysconfig.get_path("stdlib")))
    found.append(DEBIAN_DIR)
    return found


def corpus_dir() -> Path:
    """The first candidate folder that holds every manifest file; ``DataMissing`` naming the install otherwise."""
    names = list(manifest())
    for folder in candidate_dirs():
        if all((folder / name).is_file() for name in names):
            return folder
    looked = ", ".join(str(d) for d in candidate_dirs())
    raise DataMissing(
        f"CPython 3.11's standard library (the lm corpus) not found in {looked}: install it with `{INSTALL}`"
        f" or point {DIR_ENV} at a python3.11 lib folder"
    )


@dataclass(frozen=True, slots=True)
class Corpus:
    train: bytes  # the training modules joined in manifest order
    held_out: bytes
    train_files: tuple[str, ...]
    held_out_files: tuple[str, ...]


def read_corpus(folder: Path) -> Corpus:
    train, held = split_names(list(manifest()))
    return Corpus(
        train=b"".join((folder / name).read_bytes() for name in train),
        held_out=b"".join((folder / name).read_bytes() for name in held),
        train_files=tuple(train),
        held_out_files=tuple(held),
    )
