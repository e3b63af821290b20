"""Split extracted text into passages sized for retrieval and for a prompt.

Passages follow the document's own structure: first its headings (each passage remembers
the heading path it sits under, which is what makes "Refund policy" findable when the
passage itself only says "within 30 days"), then its paragraphs, then lines, sentences and
words only when a paragraph alone is too long. Consecutive passages of one section share a
little overlapping text so an answer that straddles a boundary is still found whole.

The checksum lets re-imports skip passages that did not change (no re-embedding).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Protocol

DEFAULT_TARGET = 700
DEFAULT_MAX = 1000
DEFAULT_OVERLAP = 100

_HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t]*#*[ \t]*$")
_FENCE = re.compile(r"^[ \t]*(```|~~~)")
_SENTENCE_END = re.compile(r"(?<=[.!?…])\s+|(?<=[.!?…][\"')\]])\s+|(?<=[。！？])")


class _HasText(Protocol):
    text: str


@dataclass
class Section:
    """Text under one heading; ``heading_path`` runs from the outermost heading inwards."""

    heading_path: list[str]
    text: str


@dataclass
class Chunk:
    """One passage. ``ordinal`` counts from 0 within the document."""

    ordinal: int
    heading_path: list[str]
    text: str
    checksum: str = field(default="")

    def __post_init__(self) -> None:
        if not self.checksum:
            self.checksum = checksum(self.text)

    @property
    def embedding_text(self) -> str:
        """What to embed: the heading path gives a passage the context its words may lack."""
        if not self.heading_path:
            return self.text
        return " > ".join(self.heading_path) + "\n\n" + self.text


def checksum(text: str) -> str:
    """sha256 hex digest of the UTF-8 text."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def split_sections(text: str) -> list[Section]:
    """Split markdown-ish text at ATX headings (``#`` to ``######``), ignoring fenced code.

    Text before the first heading is a section with an empty path. Sections whose body is
    empty (a heading directly followed by a sub-heading) are left out.
    """
    sections: list[Section] = []
    stack: list[tuple[int, str]] = []
    body: list[str] = []
    in_fence = False

    def close() -> None:
        content = "\n".join(body).strip()
        if content:
            sections.append(Section(heading_path=[title for _level, title in stack], text=content))
        body.clear()

    for line in text.split("\n"):
        if _FENCE.match(line):
            in_fence = not in_fence
            body.append(line)
            continue
        match = None if in_fence else _HEADING.match(line)
        if match:
            close()
            level = len(match.group(1))
            while stack and stack[-1][0] >= level:
                stack.pop()
            stack.append((level, match.group(2).strip()))
        else:
            body.append(line)
    close()
    return sections


def _paragraphs(text: str) -> list[str]:
    """Blank-line separated blocks; a fenced code block stays one block even with blank lines."""
    blocks: list[str] = []
    current: list[str] = []
    in_fence = False
    for line in text.split("\n"):
        if _FENCE.match(line):
            in_fence = not in_fence
        if not in_fence and not line.strip():
            if current:
                blocks.append("\n".join(current).strip())
                current = []
            continue
        current.append(line)
    if current:
        blocks.append("\n".join(current).strip())
    return [b for b in blocks if b]


def _split_words(text: str, limit: int) -> list[str]:
    pieces: list[str] = []
    current = ""
    for word in text.split():
        while len(word) > limit:  # a URL or a token without spaces: cut it
            if current:
                pieces.append(current)
                current = ""
            pieces.append(word[:limit])
            word = word[limit:]
        candidate = f"{current} {word}" if current else word
        if len(candidate) <= limit:
            current = candidate
        else:
            pieces.append(current)
            current = word
    if current:
        pieces.append(current)
    return pieces


def _pack(parts: list[str], limit: int, joiner: str) -> list[str]:
    """Greedily join consecutive parts while they fit in ``limit``."""
    out: list[str] = []
    current = ""
    for part in parts:
        candidate = f"{current}{joiner}{part}" if current else part
        if len(candidate) <= limit:
            current = candidate
        else:
            if current:
                out.append(current)
            current = part
    if current:
        out.append(current)
    return out


def _split_long(paragraph: str, limit: int) -> list[str]:
    """Break one over-long paragraph at lines, then sentences, then words."""
    if len(paragraph) <= limit:
        return [paragraph]
    lines = [line for line in paragraph.split("\n") if line.strip()]
    if len(lines) > 1:
        parts = [piece for line in lines for piece in _split_long(line, limit)]
        return _pack(parts, limit, "\n")
    sentences = [s for s in _SENTENCE_END.split(paragraph) if s and s.strip()]
    if len(sentences) > 1:
        parts = [piece for sentence in sentences for piece in _split_long(sentence.strip(), limit)]
        return _pack(parts, limit, " ")
    return _split_words(paragraph, limit)


def _overlap_tail(text: str, size: int) -> str:
    """The last ``size`` characters or fewer, starting at a sentence (or else a word) boundary."""
    if size <= 0 or not text:
        return ""
    if len(text) <= size:
        return text
    tail = text[-size:]
    sentence = re.search(r"(?<=[.!?。！？])\s+\S", tail)
    if sentence:
        return tail[sentence.end() - 1 :].strip()
    space = tail.find(" ")
    return tail[space + 1 :].strip() if space != -1 else ""


def chunk_text(
    text: str, *, target: int = DEFAULT_TARGET, max_chars: int = DEFAULT_MAX, overlap: int = DEFAULT_OVERLAP
) -> list[Chunk]:
    """Passages of about ``target`` characters, never more than ``max_chars`` (overlap included).

    ``overlap``: characters of the previous passage repeated at the start of the next one
    within the same section (0 for none).
    """
    if not 0 <= overlap < target <= max_chars:
        raise ValueError("need 0 <= overlap < target <= max_chars")
    piece_limit = max(max_chars - overlap - 1, 1)
    chunks: list[Chunk] = []
    for section in split_sections(text):
        units = [piece for paragraph in _paragraphs(section.text) for piece in _split_long(paragraph, piece_limit)]
        current = ""
        previous = ""
        for unit in units:
            if current:
                candidate = f"{current}\n\n{unit}"
                if len(candidate) <= target or (len(current) < target // 2 and len(candidate) <= max_chars):
                    current = candidate
                    continue
                chunks.append(Chunk(ordinal=len(chunks), heading_path=list(section.heading_path), text=current))
                previous = current
            tail = _overlap_tail(previous, overlap)
            if tail and len(tail) + 2 + len(unit) > max_chars:
                tail = _overlap_tail(tail, max_chars - len(unit) - 2)
            current = f"{tail}\n\n{unit}" if tail else unit
        if current:
            chunks.append(Chunk(ordinal=len(chunks), heading_path=list(section.heading_path), text=current))
    return chunks


def _halves(chunk: Chunk) -> list[Chunk]:
    """A chunk cut in about two at its best boundary (paragraph, line, sentence, word)."""
    text = chunk.text
    half = len(text) // 2 + 1
    parts = [c.text for c in chunk_text(text, target=half, max_chars=max(half, int(len(text) * 0.6)), overlap=0)]
    if len(parts) < 2:
        parts = [text[:half], text[half:]]
    return [Chunk(0, list(chunk.heading_path), p) for p in parts if p.strip()]


def fit_window(chunks: list[Chunk], count, limit: int, as_embedded=None) -> list[Chunk]:
    """Split every chunk whose embedded form is longer than ``limit`` units in about two, at
    a paragraph, line, sentence or word boundary, until each fits; ordinals are renumbered.
    ``count(texts)`` returns one length per text (e.g. a model's word pieces);
    ``as_embedded(chunk)`` is the text the model will see (default: the chunk's own text)."""
    render = as_embedded or (lambda c: c.text)

    def fit(batch: list[Chunk]) -> list[Chunk]:
        out: list[Chunk] = []
        for chunk, size in zip(batch, count([render(c) for c in batch]) if batch else [], strict=False):
            if size <= limit or len(chunk.text) < 40:
                out.append(chunk)
            else:
                out.extend(fit(_halves(chunk)))
        return out

    return [Chunk(ordinal=i, heading_path=c.heading_path, text=c.text) for i, c in enumerate(fit(chunks))]


def chunk_document(
    document: _HasText | str,
    *,
    target: int = DEFAULT_TARGET,
    max_chars: int = DEFAULT_MAX,
    overlap: int = DEFAULT_OVERLAP,
) -> list[Chunk]:
    """``chunk_text`` of a :class:`~pyapp.knowledge.extract.Document` (or of plain text)."""
    text = document if isinstance(document, str) else document.text
    return chunk_text(text, target=target, max_chars=max_chars, overlap=overlap)
