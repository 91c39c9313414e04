"""Build ``src/divssl/resources/imagenet1k_hierarchy.json`` from WordNet 3.0.

Inputs (all offline):

* the 1000 ImageNet-1k synset ids and their lemmas, shipped inside ``timm``
  (``timm/data/_info/imagenet_synsets.txt`` and ``imagenet_synset_to_lemma.txt``);
* WordNet 3.0 from Debian's ``wordnet-base`` package (``apt-get install wordnet-base``, dict
  files in ``/usr/share/wordnet``), read with nltk's ``WordNetCorpusReader``.

Debian's package lacks the ``lexnames`` file nltk expects; its content is the fixed table of the
45 lexicographer files printed in WordNet's own ``lexnames(5WN)`` manual page, so the script
regenerates it from ``/usr/share/man/man5/lexnames.5WN.gz`` (shipped by the same package) into a
staging copy of the dict folder. nltk only reads corpora inside its allowed data roots, so the
staging folder is a real copy (not symlinks) registered in ``nltk.data.path``.

Path rule. A synset can have several hypernym paths to ``entity.n.01`` (e.g. through both
``instrumentality`` and ``container``); we keep **the longest path, ties broken by the
lexicographically smallest root-to-class sequence of WordNet ids**. With root-first comparison the
part of the chosen path above any node X is X's own chosen path, so the chosen paths of all classes
agree on every node's parent and form a tree (the script asserts this).

Output JSON: ``chains`` (class wnid -> ancestor wnids, parent first, ``n00001740`` entity last),
``names`` (wnid -> first WordNet lemma, underscores as spaces, for every node), ``synsets``
(wnid -> ``animal.n.01``), ``labels`` (class wnid -> timm's lemma string), and provenance.

Usage: ``python scripts/build_imagenet_hierarchy.py [--wordnet /usr/share/wordnet] [--out FILE]``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import nltk
import timm.data
from nltk.corpus.reader.wordnet import WordNetCorpusReader

from divssl.data.hierarchy import HIERARCHY_FORMAT, IMAGENET1K_RESOURCE, load_hierarchy
from divssl.io import atomic_write_text

ROOT_WNID = "n00001740"  # entity.n.01
LEXNAMES_MAN = Path("/usr/share/man/man5/lexnames.5WN.gz")
_CATEGORY = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}
PATH_RULE = (
    "longest hypernym path (hypernyms and instance hypernyms) to entity.n.01; ties broken by the "
    "lexicographically smallest root-to-class sequence of WordNet ids"
)


class _WordNet30Reader(WordNetCorpusReader):
    """nltk's reader without the cross-version synset mapping.

    ``map_wn`` maps other WordNet versions onto nltk's bundled 3.0 copy (which is not installed
    here); the Debian files *are* WordNet 3.0, so no mapping is needed.
    """

    def map_wn(self, version: str = "wordnet") -> None:
        return None


def lexnames_from_man(man_page: Path) -> str:
    """The ``lexnames`` file (``NN<TAB>pos.name<TAB>category``) from the lexnames(5WN) table."""
    with gzip.open(man_page, "rt") as fh:
        text = fh.read()
    rows = re.findall(r"^(\d\d)\t(noun|verb|adj|adv)\.(\w+)\s*\t", text, flags=re.M)
    lines = [f"{num}\t{pos}.{name}\t{_CATEGORY[pos]}" for num, pos, name in rows]
    if len(lines) != 45 or [int(r[0]) for r in rows] != list(range(45)):
        raise RuntimeError(f"expected the 45 lexicographer files in {man_page}, got {len(lines)}")
    return "\n".join(lines) + "\n"


def open_wordnet(dict_dir: Path, staging: Path) -> WordNetCorpusReader:
    """Copy the WordNet dict files into ``staging`` (+ ``lexnames``) and open them with nltk."""
    for f in dict_dir.iterdir():
        if f.is_file():
            shutil.copyfile(f, staging / f.name)
    if not (staging / "lexnames").is_file():
        (staging / "lexnames").write_text(lexnames_from_man(LEXNAMES_MAN))
    nltk.data.path.append(str(staging))
    reader = _WordNet30Reader(str(staging), None)
    if reader.get_version() != "3.0":
        raise RuntimeError(f"expected WordNet 3.0, found {reader.get_version()}")
    return reader


def wnid(synset: Any) -> str:
    """``n01440764`` style id of a noun synset."""
    return f"{synset.pos()}{synset.offset():08d}"


def choose_path(paths: list[list[Any]]) -> list[str]:
    """The root-first path kept for a class (see the module docstring)."""
    ids = [[wnid(s) for s in p] for p in paths]
    return min(ids, key=lambda p: (-len(p), p))


def imagenet_synsets() -> tuple[list[str], dict[str, str]]:
    """The 1000 ImageNet-1k wnids (class-index order) and timm's lemma string per wnid."""
    info = Path(timm.data.__file__).parent / "_info"
    wnids = (info / "imagenet_synsets.txt").read_text().split()
    lemmas: dict[str, str] = {}
    for line in (info / "imagenet_synset_to_lemma.txt").read_text().splitlines():
        key, _, lemma = line.partition("\t")
        lemmas[key] = lemma
    if len(wnids) != 1000 or len(set(wnids)) != 1000:
        raise RuntimeError(f"expected 1000 unique ImageNet synsets, got {len(set(wnids))}")
    return wnids, {w: lemmas[w] for w in wnids}


def build(wn: WordNetCorpusReader) -> dict[str, Any]:
    """Build the hierarchy document."""
    wnids, labels = imagenet_synsets()
    chains: dict[str, list[str]] = {}
    synsets: dict[str, Any] = {}
    for cls in wnids:
        synset = wn.synset_from_pos_and_offset("n", int(cls[1:]))
        path = choose_path(synset.hypernym_paths())
        if path[-1] != cls or path[0] != ROOT_WNID:
            raise RuntimeError(f"{cls}: unexpected path {path}")
        chains[cls] = list(reversed(path[:-1]))
        for s in synset.hypernym_paths()[0] + [synset]:
            synsets.setdefault(wnid(s), s)
    nodes = set(chains) | {n for chain in chains.values() for n in chain}
    for node in nodes - set(synsets):
        synsets[node] = wn.synset_from_pos_and_offset("n", int(node[1:]))
    return {
        "format": HIERARCHY_FORMAT,
        "description": "ImageNet-1k classes with their WordNet 3.0 ancestor chains",
        "source": "WordNet 3.0 (Debian wordnet-base) via nltk; synset list from timm",
        "path_rule": PATH_RULE,
        "root": ROOT_WNID,
        "chains": chains,
        "names": {n: synsets[n].lemma_names()[0].replace("_", " ") for n in sorted(nodes)},
        "synsets": {n: synsets[n].name() for n in sorted(nodes)},
        "labels": labels,
    }


def render(doc: dict[str, Any]) -> str:
    """JSON text with one line per class / node (readable diffs, compact file)."""
    parts = []
    for key in sorted(doc):
        value = doc[key]
        if isinstance(value, dict):
            items = sorted(value.items())
            rows = ",\n".join(f"    {json.dumps(k)}: {json.dumps(v)}" for k, v in items)
            parts.append(f"  {json.dumps(key)}: {{\n{rows}\n  }}")
        else:
            parts.append(f"  {json.dumps(key)}: {json.dumps(value)}")
    return "{\n" + ",\n".join(parts) + "\n}\n"


def main() -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wordnet", type=Path, default=Path("/usr/share/wordnet"))
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if not (args.wordnet / "data.noun").is_file():
        raise SystemExit(
            f"WordNet dict files not found in {args.wordnet}: apt-get install wordnet-base"
        )
    repo = Path(__file__).resolve().parents[1]
    out = args.out or repo / "src" / "divssl" / "resources" / IMAGENET1K_RESOURCE
    with tempfile.TemporaryDirectory() as staging:
        doc = build(open_wordnet(args.wordnet, Path(staging)))
    atomic_write_text(out, render(doc))
    out.chmod(0o644)  # package data: readable by everyone (temporary files are created 0600)
    h = load_hierarchy(out)  # raises if the chosen paths do not form a tree
    print(f"wrote {out}: {len(h.chains)} classes, {len(h.nodes())} nodes")


if __name__ == "__main__":
    main()
