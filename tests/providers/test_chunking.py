"""Chunking: structure-following, bounded, overlapping, checksummed passages."""
from __future__ import annotations

import hashlib
import itertools
import random
import re

import pytest
from pyapp.knowledge.chunking import Chunk, chunk_document, chunk_text, split_sections
from pyapp.knowledge.extract import Document

WORDS = ["widget", "router", "password", "invoice", "refund", "shipping", "battery", "warranty", "light", "button",
         "network", "account", "billing", "customer", "order", "delivery", "screen", "cable", "firmware", "update",
         "reset"]


def _sentences(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    out = []
    for i in range(count):
        words = [rng.choice(WORDS) for _ in range(rng.randint(6, 22))]
        out.append(f"S{seed}x{i} " + " ".join(words).capitalize() + ".")
    return out


def _long_document() -> tuple[str, list[str]]:
    parts, all_sentences = [], []
    for section in range(4):
        parts.append(f"## Section {section}")
        for paragraph in range(5):
            sentences = _sentences(random.Random(section * 10 + paragraph).randint(2, 9), section * 10 + paragraph)
            all_sentences += sentences
            parts.append(" ".join(sentences))
    return "# Manual\n\nIntro paragraph.\n\n" + "\n\n".join(parts), all_sentences


def test_sections_follow_nested_headings_and_ignore_code():
    text = "Preamble.\n\n# A\n\nText A.\n\n## B\n\nText B.\n\n```\n# not a heading\n```\n\n### C\nText C.\n\n## D\nText D.\n\n# E\n\n## F\nText F."
    sections = split_sections(text)
    assert [(s.heading_path, s.text.split("\n")[0]) for s in sections] == [
        ([], "Preamble."), (["A"], "Text A."), (["A", "B"], "Text B."), (["A", "B", "C"], "Text C."),
        (["A", "D"], "Text D."), (["E", "F"], "Text F.")]
    assert "# not a heading" in sections[2].text


def test_chunks_are_bounded_cover_everything_and_are_checksummed():
    text, sentences = _long_document()
    chunks = chunk_text(text)
    assert len(chunks) > 5
    assert [c.ordinal for c in chunks] == list(range(len(chunks)))
    assert all(len(c.text) <= 1200 for c in chunks)
    assert sum(len(c.text) for c in chunks) / len(chunks) > 400  # no confetti
    joined = "\n".join(c.text for c in chunks)
    assert all(s in joined for s in sentences)
    for chunk in chunks:
        assert chunk.checksum == hashlib.sha256(chunk.text.encode()).hexdigest()
        assert chunk.heading_path[0] == "Manual"
    assert [c.checksum for c in chunk_text(text)] == [c.checksum for c in chunks]  # deterministic


def test_consecutive_chunks_of_a_section_overlap():
    text = "# Only\n\n" + "\n\n".join(" ".join(_sentences(4, seed)) for seed in range(12))
    chunks = chunk_text(text, target=500, max_chars=700, overlap=120)
    assert len(chunks) >= 3
    for before, after in itertools.pairwise(chunks):
        first_sentence = re.split(r"(?<=\.)\s", after.text)[0]
        assert first_sentence in before.text
        assert len(after.text) <= 700
    no_overlap = chunk_text(text, target=500, max_chars=700, overlap=0)
    starts = [re.split(r"(?<=\.)\s", c.text)[0] for c in no_overlap[1:]]
    assert not any(s in prev.text for s, prev in zip(starts, no_overlap, strict=False))


def test_overlong_paragraphs_and_tokens_are_split_under_the_hard_max():
    giant_sentence = " ".join(WORDS * 40) + "."
    url = "https://example.test/" + "a" * 3000
    chunks = chunk_text(f"# T\n\n{giant_sentence}\n\n{url}", target=300, max_chars=400, overlap=50)
    assert all(len(c.text) <= 400 for c in chunks)
    assert "".join(c.text for c in chunks).count("a" * 300) >= 9


def test_small_sections_stay_separate_and_empty_sections_vanish():
    doc = Document(title="FAQ", text="# FAQ\n\n## Q1\n\nA1.\n\n## Q2\n\n## Q3\n\nA3.")
    chunks = chunk_document(doc)
    assert [(c.heading_path, c.text) for c in chunks] == [(["FAQ", "Q1"], "A1."), (["FAQ", "Q3"], "A3.")]
    assert chunks[0].embedding_text == "FAQ > Q1\n\nA1."
    assert chunk_document("") == []


def test_bad_sizes_are_rejected():
    with pytest.raises(ValueError):
        chunk_text("x", target=100, max_chars=50)
    with pytest.raises(ValueError):
        chunk_text("x", target=100, max_chars=200, overlap=100)
    assert isinstance(chunk_text("hello")[0], Chunk)
