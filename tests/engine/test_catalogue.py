"""Reading a labelled catalogue: CSV and YAML rows with their lines, bad rows skipped with
reasons (the hostile table is tests/hostile/test_classify_hostile.py), and the shipped catalogue."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from engine.catalogue import CatalogueError, read_catalogue
from tests.samples import REPO


def write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


def test_yaml_rows_keep_their_lines_and_topics(tmp_path: Path) -> None:
    path = write(tmp_path, "c.yaml", "# a catalogue\n"
                 "- text: Watercolour for beginners\n  topics: [art-training]\n"
                 "- {text: 用代码画画, topics: [programming, art-training, programming]}\n"
                 "- text: Guitar and piano\n  topics: music; education\n")
    catalogue = read_catalogue(path)
    assert catalogue.problems == ()
    assert [(r.line, r.text, r.topics) for r in catalogue.rows] == [
        (2, "Watercolour for beginners", ("art-training",)),
        (4, "用代码画画", ("programming", "art-training")),
        (5, "Guitar and piano", ("music", "education")),
    ]


def test_csv_rows_split_topics_on_semicolons_and_a_quoted_newline_keeps_the_first_line(tmp_path: Path) -> None:
    path = write(tmp_path, "c.csv", '\ufefftopics,text\r\nmusic;education,"Piano, for children"\r\n'
                 'programming; art-training ,"Line one\nline two"\r\n,\r\nmusic,Drums\r\n')
    catalogue = read_catalogue(path)
    assert catalogue.problems == ()
    assert [(r.line, r.topics) for r in catalogue.rows] == [
        (2, ("music", "education")), (3, ("programming", "art-training")), (6, ("music",))]
    assert catalogue.rows[1].text == "Line one\nline two"


def test_a_text_seen_before_is_skipped_naming_the_line_kept(tmp_path: Path) -> None:
    path = write(tmp_path, "c.csv", "text,topics\nDrums,music\n  Drums ,education\nFlute,music\n")
    catalogue = read_catalogue(path)
    assert [r.text for r in catalogue.rows] == ["Drums", "Flute"]
    assert catalogue.problems == ((3, "text: the same text as line 2, which is kept"),)


@pytest.mark.parametrize("name", ["c.txt", "c"])
def test_an_unknown_suffix_is_refused_naming_the_formats(tmp_path: Path, name: str) -> None:
    with pytest.raises(CatalogueError, match=r"\.csv, \.yaml or \.yml"):
        read_catalogue(write(tmp_path, name, "text,topics\n"))


def test_the_shipped_catalogue_is_bilingual_multi_topic_and_reads_whole() -> None:
    catalogue = read_catalogue(REPO / "configs" / "catalogue.yaml")
    assert catalogue.problems == () and len(catalogue.rows) >= 200
    topics = Counter(t for row in catalogue.rows for t in row.topics)
    assert set(topics) == {"art-training", "art-collection", "music", "education", "programming"}
    assert min(topics.values()) >= 40
    chinese = [r for r in catalogue.rows if any("\u4e00" <= c <= "\u9fff" for c in r.text)]
    assert 0.3 <= len(chinese) / len(catalogue.rows) <= 0.7
    multi = [r for r in catalogue.rows if len(r.topics) > 1]
    assert len(multi) >= 40 and any(set(r.topics) == {"programming", "art-training"} for r in multi)
