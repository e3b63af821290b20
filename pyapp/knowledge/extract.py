"""Readable text out of what a knowledge source gives us: HTML, PDF, Markdown, plain text.

Every extractor returns a :class:`Document` whose ``text`` is "markdown-ish": headings are
``#`` lines, paragraphs are separated by blank lines, list items start with ``- ``, code is
fenced. That one shape is what the chunker splits, whatever the source format was.

Also here, for the crawler: :func:`extract_links` (same-site links of a page),
:func:`parse_sitemap` and :func:`sitemaps_from_robots`.

All text is cleaned for storage: Postgres rejects U+0000, lone surrogates cannot be encoded,
and bidi overrides or zero-width characters make passages render misleadingly.
"""

from __future__ import annotations

import io
import re
import unicodedata
import zlib
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import TYPE_CHECKING
from urllib.parse import urldefrag, urljoin, urlsplit, urlunsplit
from xml.etree import ElementTree

from selectolax.lexbor import LexborHTMLParser, LexborNode

if TYPE_CHECKING:
    from pyapp.knowledge.chunking import Section

MAX_SITEMAP_BYTES = 50 * 1024 * 1024  # the sitemap protocol's own limit, uncompressed
MAX_SITEMAP_URLS = 50_000
MAX_PDF_PAGES = 1000
# Which extraction made a source's passages: raised whenever the same bytes extract to different
# text (2: chrome named by class: navigation bars, breadcrumbs, pagers, tables of contents; 3: pagers
# known by their labels, as texinfo writes them; 4: texinfo's section-toc and mini-toc; 5: a pager's
# label is a word and a colon, so Node.js's "previous <fs.Stats>" stays). A
# re-import by a newer extraction asks for every page whole instead of "if changed" (crawl.py),
# else an unchanged page would keep the text the older one made.
EXTRACTION_VERSION = 5


class ExtractError(Exception):
    """Content we cannot turn into text. ``code``: ``unsupported_type``, ``encrypted_pdf``,
    ``bad_pdf``, ``bad_sitemap``, ``too_deep``."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass
class Document:
    """Extracted content. ``kind`` is ``html``, ``pdf``, ``markdown`` or ``text``."""

    title: str
    text: str
    kind: str = "text"
    url: str | None = None
    link_density: float = 0.0  # share of the text that is link text (HTML): index and TOC pages are near 1

    @property
    def sections(self) -> list[Section]:
        """The text split at its headings, each with its heading path."""
        from pyapp.knowledge.chunking import split_sections

        return split_sections(self.text)


# ---------------------------------------------------------------------------------------
# Text hygiene
# ---------------------------------------------------------------------------------------

# C0/C1 controls except tab and newline; lone surrogates; bidi embeddings/overrides/isolates;
# zero-width space, word joiner and BOM. ZWJ/ZWNJ stay: scripts and emoji need them.
_UNSAFE_CHARS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff\u202a-\u202e\u2066-\u2069\u200b\u2060\ufeff]")


def clean_text(text: str) -> str:
    """NFC, ``\\n`` line ends, no unsafe characters, no trailing spaces, at most one blank line."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _UNSAFE_CHARS.sub("", unicodedata.normalize("NFC", text))
    text = re.sub(r"[ \t\u00a0]+\n", "\n", text)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip()


def _collapse(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def decode_bytes(data: bytes, charset: str | None = None) -> str:
    """Decode with the declared charset, a BOM, UTF-8, then Windows-1252; never raises."""
    for bom, codec in ((b"\xef\xbb\xbf", "utf-8"), (b"\xff\xfe", "utf-16-le"), (b"\xfe\xff", "utf-16-be")):
        if data.startswith(bom):
            return data[len(bom) :].decode(codec, errors="replace")
    for declared in (charset, "utf-8"):
        if declared:
            try:
                return data.decode(declared)
            except (LookupError, UnicodeDecodeError):
                continue
    return data.decode("cp1252", errors="replace")


_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([a-zA-Z0-9_\-]+)""", re.I)


def _html_charset(data: bytes) -> str | None:
    match = _META_CHARSET.search(data[:4096])
    return match.group(1).decode("ascii") if match else None


# ---------------------------------------------------------------------------------------
# HTML
# ---------------------------------------------------------------------------------------

_DROP_TAGS = frozenset(
    {
        "script",
        "style",
        "noscript",
        "template",
        "svg",
        "math",
        "iframe",
        "object",
        "embed",
        "canvas",
        "nav",
        "footer",
        "aside",
        "form",
        "button",
        "select",
        "textarea",
        "input",
        "dialog",
        "head",
        "video",
        "audio",
        "map",
    }
)
_DROP_ROLES = frozenset({"navigation", "banner", "contentinfo", "complementary", "search", "dialog", "alert"})
# Words that name page chrome in the common site generators and themes: cookie and consent
# banners, sidebars, navigation bars and link bars (Bootstrap's navbar, DocBook XSL's
# navheader/navfooter with their prev/up/next/home tables, "nav", "navigation", "nav-links"),
# breadcrumbs and pagination/pagers. Without them every page of a DocBook site carried a passage
# of its title and "Prev | Up | Home | Next", and its neighbours' titles in its last one. A class
# names chrome when one of its words is one of these; an id only when it is one of them whole:
# ids are mostly made from headings ("editing-and-navigation", "cookie-settings"), and such a
# section is content.
_CHROME_WORDS = (
    r"(cookie|consent|sidebar|skip-link|nav|navbar|navheader|navfooter|navigation|breadcrumbs?|pagination|pager)"
)
# A page's own table of contents (DocBook's div.toc on every chapter page, MkDocs' and Hugo's toc,
# texinfo's ul.section-toc, mini-toc since texinfo 7) repeats the headings of the pages below it:
# matched as a whole class word only, as Sphinx marks each heading's link back to its contents
# "toc-backref" (and a theme may mark a heading "no-toc" or a page "has-toc").
_DROP_CLASS_HINT = re.compile(
    rf"(^|[\s_-]){_CHROME_WORDS}([\s_-]|$)|(^|\s)((section-|mini-|page-)?toc|table-of-contents)(\s|$)", re.I
)
_DROP_ID_HINT = re.compile(rf"{_CHROME_WORDS}", re.I)
_BLOCK_TAGS = frozenset(
    {
        "address",
        "article",
        "blockquote",
        "body",
        "caption",
        "dd",
        "details",
        "div",
        "dl",
        "dt",
        "fieldset",
        "figcaption",
        "figure",
        "header",
        "hgroup",
        "hr",
        "html",
        "legend",
        "li",
        "main",
        "ol",
        "p",
        "section",
        "summary",
        "table",
        "tbody",
        "tfoot",
        "thead",
        "tr",
        "ul",
    }
)
_HEADINGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}


def _has_ancestor(node: LexborNode, tags: frozenset[str]) -> bool:
    parent = node.parent
    while parent is not None:
        if parent.tag in tags:
            return True
        parent = parent.parent
    return False


_PERMALINK_MARKS = frozenset({"¶", "§", "#", "🔗", "link"})


def _dropped(node: LexborNode) -> bool:
    """Page chrome and invisible content, which would pollute every passage of the site."""
    tag = node.tag
    if tag in _DROP_TAGS:
        return True
    if tag == "a" and (node.text(deep=True) or "").strip() in _PERMALINK_MARKS:
        return True  # a heading's permalink anchor (Sphinx's ¶, MkDocs' #): not part of the heading
    if tag == "header" and not _has_ancestor(node, frozenset({"article", "main"})):
        # A site header is chrome; an article's own header usually holds its h1.
        return True
    attrs = node.attributes
    if not attrs:
        return False
    if "hidden" in attrs or (attrs.get("aria-hidden") or "").lower() == "true":
        return True
    if (attrs.get("role") or "").lower() in _DROP_ROLES:
        return True
    if re.search(r"display\s*:\s*none|visibility\s*:\s*hidden", attrs.get("style") or "", re.I):
        return True
    return bool(_DROP_CLASS_HINT.search(attrs.get("class") or "") or _DROP_ID_HINT.fullmatch(attrs.get("id") or ""))


_CELL = "\ue000"  # table-cell separator while collecting (a private-use character, not whitespace)
# A pager: a block of links to the neighbouring pages and nothing else but their labels, as texinfo
# writes atop every node ("Next: Broadcasting, Up: Vectorization [Contents][Index]", in a div of
# class "header", a word that also names content: pandoc's table header rows, Bootstrap's
# card-header) and many hand-made sites ("« Previous | Next »"). Its titles are the neighbours',
# so every page's first passage matched questions about the pages beside it.
_PAGER_LABEL = r"(next|prev|previous|up|top|home|contents|index)"
_PAGER_TEXT = re.compile(rf"(?:[\s,:;|/\[\]()<>«»‹›←→↑•·-]|{_PAGER_LABEL}\b)*", re.I)
_PAGER_WORD = re.compile(r"\b(next|prev|previous|up)\s*:", re.I)  # a label: not Node's "previous <fs.Stats>"
# Separators, then labels each followed by separators: one way to match any text, so a long run of
# labels fails in linear time ("(sep* label sep*)+" split every run of separators every way: a link
# text of 16 "next" and a "!" took 17 s).
_PAGER_SEP = r"[\s|«»‹›←→<>:,.-]*"
_PAGER_LINKS = re.compile(rf"{_PAGER_SEP}(?:{_PAGER_LABEL}\b{_PAGER_SEP})+", re.I)  # not "next()"


def _is_pager(linked: str, plain: str) -> bool:
    """Whether a block's text is links labelled as a pager: outside its links only pager labels and
    separators, with "next:", "previous:" or "up:" among them, or links that are only such labels."""
    if not linked.strip() or not _PAGER_TEXT.fullmatch(plain):
        return False
    return bool(_PAGER_WORD.search(plain)) or bool(_PAGER_LINKS.fullmatch(linked))


class _TextBuilder:
    """Collects blocks while walking the tree; inline text accumulates until a block ends."""

    def __init__(self) -> None:
        self.blocks: list[tuple[str, str]] = []  # (kind, text)
        self.inline: list[str] = []
        self.prefix = ""
        self.kind = "p"
        self.in_link = 0  # depth of <a href> around the text being read
        self.linked: list[str] = []  # the block's text inside links, and outside them
        self.plain: list[str] = []
        self.pager_links = 0  # characters of link text in the pagers left out (not the page's own links)

    def add_text(self, text: str) -> None:
        self.inline.append(text)
        (self.linked if self.in_link else self.plain).append(text)

    def flush(self) -> None:
        lines = [_collapse(line) for line in "".join(self.inline).split("\n")]
        text = "\n".join(line for line in lines if line)
        if text and _is_pager(" ".join(self.linked), " ".join(self.plain)):
            self.pager_links += sum(len(_collapse(part)) for part in self.linked)
            text = ""
        self.linked, self.plain = [], []
        if text:
            if self.kind == "li":
                text = "- " + text.replace("\n", " ")
            elif self.kind == "tr":
                text = " | ".join(cell for cell in (c.strip() for c in text.split(_CELL)) if cell)
            text = text.replace(_CELL, " ").strip()
            if text:
                self.blocks.append((self.kind, self.prefix + text))
        self.inline = []
        self.prefix = ""
        self.kind = "p"

    def render(self) -> str:
        out: list[str] = []
        previous = ""
        for kind, text in self.blocks:
            if out:
                tight = kind == previous and kind in ("li", "tr")
                out.append("\n" if tight else "\n\n")
            out.append(text)
            previous = kind
        return "".join(out)


def _walk(root: LexborNode) -> _TextBuilder:
    """Iterative (not recursive: hostile pages nest deeply) walk producing markdown-ish text."""
    builder = _TextBuilder()
    stack: list[tuple[LexborNode, bool]] = [(root, False)]
    while stack:
        node, exiting = stack.pop()
        tag = node.tag
        if exiting:
            if tag in _HEADINGS or tag in _BLOCK_TAGS:
                builder.flush()
            elif tag in ("td", "th"):
                builder.inline.append(_CELL)
            elif tag == "a" and "href" in node.attributes:
                builder.in_link -= 1
            continue
        if tag == "-text":
            # Source line breaks are just whitespace; only <br> makes a line break.
            builder.add_text(re.sub(r"\s+", " ", node.text_content or ""))
            continue
        if not node.is_element_node or _dropped(node):
            continue
        if tag == "br":
            builder.inline.append("\n")
            continue
        if tag == "pre":
            builder.flush()
            code = (node.text(deep=True, strip=False) or "").strip("\n")
            if code.strip():
                builder.blocks.append(("pre", f"```\n{code}\n```"))
            continue
        if tag in _HEADINGS:
            builder.flush()
            builder.prefix = "#" * _HEADINGS[tag] + " "
            builder.kind = "h"
        elif tag in _BLOCK_TAGS:
            builder.flush()
            if tag in ("li", "tr"):
                builder.kind = tag
        elif tag == "img":
            continue
        elif tag == "a" and "href" in node.attributes:
            builder.in_link += 1
        stack.append((node, True))
        children = []
        child = node.child
        while child is not None:
            children.append(child)
            child = child.next
        stack.extend((c, False) for c in reversed(children))
    builder.flush()
    return builder


def _content_root(tree: LexborHTMLParser) -> LexborNode | None:
    """The main content if the page marks it (one <main>, one <article>), else the body."""
    for selector in ("main", "[role=main]", "article"):
        found = tree.css(selector)
        if len(found) == 1:
            return found[0]
    return tree.body or tree.root


def _html_title(tree: LexborHTMLParser, text: str) -> str:
    og = tree.css_first('meta[property="og:title"]')
    title_node = tree.css_first("title")
    page_title = _collapse(og.attributes.get("content") or "") if og else ""
    page_title = page_title or (_collapse(title_node.text()) if title_node else "")
    h1 = next((line[2:].strip() for line in text.split("\n") if line.startswith("# ")), "")
    if h1 and page_title and h1.lower() in page_title.lower():
        return h1  # "Getting started | Acme Help" → "Getting started"
    return page_title or h1


# Elements open inside each other that a page may have. The parser's time grows with the square of
# the depth of nested blocks (20,000 nested <div>: 0.75 s, 25,000: 1.9 s, 100,000: 40 s, on a loaded
# machine); 20,000 keeps every page to about a second (off the event loop) and still reads
# deliberately deep pages (browsers themselves stop nesting at 512).
MAX_HTML_DEPTH = 20_000
_TAG = re.compile(r"<(/?)([A-Za-z][A-Za-z0-9:-]*)[^>]*?(/?)>")
# Void elements never nest; these close themselves when a sibling opens (or are never nested), so a
# page that leaves them unclosed (old lists, tables and paragraphs) is not deep.
_NOT_NESTING = frozenset(
    [
        "area",
        "base",
        "br",
        "col",
        "embed",
        "hr",
        "img",
        "input",
        "link",
        "meta",
        "param",
        "source",
        "track",
        "wbr",
        "p",
        "li",
        "dt",
        "dd",
        "tr",
        "td",
        "th",
        "option",
        "optgroup",
        "thead",
        "tbody",
        "tfoot",
        "colgroup",
        "caption",
        "rb",
        "rt",
        "rtc",
        "rp",
        "html",
        "head",
        "body",
    ]
)


def _check_depth(html: str) -> None:
    """ExtractError ``too_deep`` when the markup opens more than MAX_HTML_DEPTH elements inside each
    other, judged from the tags alone (linear, before the parser sees it)."""
    depth = 0
    for match in _TAG.finditer(html):
        if match.group(2).lower() in _NOT_NESTING or match.group(3):
            continue
        if match.group(1):
            depth = max(0, depth - 1)
            continue
        depth += 1
        if depth > MAX_HTML_DEPTH:
            raise ExtractError("too_deep", f"The HTML nests more than {MAX_HTML_DEPTH} elements inside each other.")


def extract_html(html: str | bytes, *, url: str | None = None, charset: str | None = None) -> Document:
    """Main text of an HTML page without scripts, styles, navigation, header, footer, sidebars,
    forms and hidden elements; headings become ``#`` lines."""
    if isinstance(html, bytes):
        html = decode_bytes(html, charset or _html_charset(html))
    _check_depth(html)
    tree = LexborHTMLParser(html)
    root = _content_root(tree)
    built = _walk(root) if root is not None else None
    text = clean_text(built.render()) if built is not None else ""
    title = clean_text(_html_title(tree, text)) or _title_from_url(url)
    density = _link_density(root, text, built.pager_links if built is not None else 0)
    return Document(title=title, text=text, kind="html", url=url, link_density=density)


def _link_density(root: LexborNode | None, text: str, pager_links: int = 0) -> float:
    """Characters of link text (outside dropped chrome and pagers) per character of the page's text."""
    if root is None or not text:
        return 0.0
    linked = -pager_links
    for anchor in root.css("a[href]"):
        node: LexborNode | None = anchor
        hidden = False
        while node is not None and node is not root:
            if _dropped(node):
                hidden = True
                break
            node = node.parent
        if not hidden:
            linked += len(_collapse(anchor.text(deep=True) or ""))
    return min(1.0, linked / max(1, len(re.sub(r"\s+", " ", text))))


# ---------------------------------------------------------------------------------------
# PDF, Markdown, text
# ---------------------------------------------------------------------------------------


def extract_pdf(data: bytes, *, url: str | None = None) -> Document:
    """Text of every page (pypdf), pages separated by blank lines; title from metadata or page 1."""
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise ExtractError("encrypted_pdf", "the PDF is password-protected")
        pages = []
        for page in reader.pages[:MAX_PDF_PAGES]:
            try:
                pages.append(page.extract_text() or "")
            except Exception:  # one broken page should not lose the whole document
                pages.append("")
        meta_title = ""
        try:
            meta_title = (reader.metadata.title or "") if reader.metadata else ""
        except Exception:
            meta_title = ""
    except ExtractError:
        raise
    except (PdfReadError, ValueError, KeyError, TypeError, zlib.error) as exc:
        raise ExtractError("bad_pdf", f"cannot read the PDF: {exc}") from None
    text = clean_text("\n\n".join(clean_text(p) for p in pages if p.strip()))
    first_line = next((line.strip() for line in text.split("\n") if line.strip()), "")
    title = clean_text(str(meta_title)) or first_line[:120] or _title_from_url(url)
    return Document(title=title, text=text, kind="pdf", url=url)


_FRONT_MATTER = re.compile(r"\A---\n(.*?)\n(---|\.\.\.)\n", re.S)
_SETEXT = re.compile(r"^(?P<text>[^\n#>\-*`|][^\n]*)\n(?P<rule>=+|-+)[ \t]*$", re.M)


def extract_markdown(text: str | bytes, *, url: str | None = None) -> Document:
    """Markdown as it is (it already has the shape), minus front matter; setext headings become ``#``."""
    if isinstance(text, bytes):
        text = decode_bytes(text)
    text = clean_text(text)
    title = ""
    front = _FRONT_MATTER.match(text + "\n")
    if front:
        meta = re.search(r"^title\s*:\s*(.+)$", front.group(1), re.M)
        title = meta.group(1).strip().strip("'\"") if meta else ""
        text = text[front.end() :].lstrip("\n") if front.end() <= len(text) else ""
    text = _SETEXT.sub(lambda m: ("# " if m.group("rule")[0] == "=" else "## ") + m.group("text").strip(), text)
    if not title:
        title = next((line.lstrip("#").strip() for line in text.split("\n") if re.match(r"#{1,6}\s", line)), "")
    return Document(title=title or _title_from_url(url), text=clean_text(text), kind="markdown", url=url)


def extract_text(text: str | bytes, *, url: str | None = None) -> Document:
    """Plain text; the title is its first line when that line is short, else the file name."""
    if isinstance(text, bytes):
        text = decode_bytes(text)
    text = clean_text(text)
    first = next((line.strip() for line in text.split("\n") if line.strip()), "")
    title = first if 0 < len(first) <= 120 else _title_from_url(url)
    return Document(title=title, text=text, kind="text", url=url)


def _title_from_url(url: str | None) -> str:
    if not url:
        return "Untitled"
    path = PurePosixPath(urlsplit(url).path)
    name = path.stem if path.name else ""
    return name.replace("-", " ").replace("_", " ").strip() or urlsplit(url).hostname or url


_KIND_BY_TYPE = {
    "text/html": "html",
    "application/xhtml+xml": "html",
    "application/pdf": "pdf",
    "application/x-pdf": "pdf",
    "text/markdown": "markdown",
    "text/x-markdown": "markdown",
    "text/plain": "text",
}
_KIND_BY_SUFFIX = {
    ".html": "html",
    ".htm": "html",
    ".xhtml": "html",
    ".pdf": "pdf",
    ".md": "markdown",
    ".markdown": "markdown",
    ".txt": "text",
    ".text": "text",
}
#: Media types the knowledge importer should accept from a fetch (``SafeFetcher.fetch(allowed_types=...)``).
SUPPORTED_TYPES = tuple(_KIND_BY_TYPE)


def detect_kind(data: bytes, content_type: str | None = None, name: str | None = None) -> str | None:
    """``html``/``pdf``/``markdown``/``text`` from the media type, then the file suffix, then a sniff."""
    media = (content_type or "").split(";")[0].strip().lower()
    suffix = PurePosixPath(urlsplit(name).path if name and "://" in name else (name or "")).suffix.lower()
    if media in _KIND_BY_TYPE:
        kind = _KIND_BY_TYPE[media]
        # Servers often label Markdown as text/plain or octet-stream; trust a .md name then.
        return "markdown" if kind == "text" and _KIND_BY_SUFFIX.get(suffix) == "markdown" else kind
    if suffix in _KIND_BY_SUFFIX:
        return _KIND_BY_SUFFIX[suffix]
    head = data[:1024].lstrip().lower()
    if head.startswith(b"%pdf-"):
        return "pdf"
    if head.startswith((b"<!doctype html", b"<html")) or b"<body" in head:
        return "html"
    if media in ("", "application/octet-stream") or media.startswith("text/"):
        try:
            data[:4096].decode("utf-8")
        except UnicodeDecodeError as exc:
            if exc.start < 4090:  # not just a character cut at the boundary
                return None
        return "text"
    return None


def extract(
    data: bytes, *, content_type: str | None = None, url: str | None = None, filename: str | None = None
) -> Document:
    """Dispatch on the content type, the file or URL name, then the bytes themselves."""
    kind = detect_kind(data, content_type, filename or url)
    charset = None
    if content_type and "charset=" in content_type.lower():
        charset = content_type.lower().split("charset=", 1)[1].split(";")[0].strip().strip('"') or None
    if kind == "html":
        return extract_html(data, url=url, charset=charset)
    if kind == "pdf":
        return extract_pdf(data, url=url)
    if kind == "markdown":
        return extract_markdown(decode_bytes(data, charset), url=url)
    if kind == "text":
        return extract_text(decode_bytes(data, charset), url=url)
    raise ExtractError("unsupported_type", f"cannot extract text from {content_type or 'this file'}")


# ---------------------------------------------------------------------------------------
# Crawling helpers
# ---------------------------------------------------------------------------------------

_SKIP_SUFFIXES = frozenset(
    {
        ".png",
        ".jpg",
        ".jpeg",
        ".gif",
        ".webp",
        ".svg",
        ".ico",
        ".bmp",
        ".avif",
        ".css",
        ".js",
        ".mjs",
        ".json",
        ".xml",
        ".rss",
        ".atom",
        ".zip",
        ".gz",
        ".tgz",
        ".rar",
        ".7z",
        ".exe",
        ".dmg",
        ".pkg",
        ".mp3",
        ".mp4",
        ".m4a",
        ".wav",
        ".avi",
        ".mov",
        ".webm",
        ".woff",
        ".woff2",
        ".ttf",
        ".otf",
        ".eot",
        ".doc",
        ".docx",
        ".xls",
        ".xlsx",
        ".ppt",
        ".pptx",
        ".csv",
        ".apk",
        ".iso",
        ".bin",
    }
)
_DEFAULT_PORTS = {"http": 80, "https": 443}


def _site_key(url: str) -> tuple[str, int | None] | None:
    parts = urlsplit(url)
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    try:
        port = parts.port
    except ValueError:
        return None
    # http and https of the same host on default ports are one site (sites redirect between them).
    return parts.hostname.rstrip(".").lower(), None if port in (None, _DEFAULT_PORTS[parts.scheme]) else port


def same_site(url: str, base_url: str) -> bool:
    """Same host name (case and trailing dot ignored) and same non-default port."""
    key = _site_key(url)
    return key is not None and key == _site_key(base_url)


def normalise_url(url: str) -> str:
    """Without fragment, with lowercase scheme and host, without default port, path at least ``/``."""
    url, _fragment = urldefrag(url)
    parts = urlsplit(url)
    host = (parts.hostname or "").rstrip(".")
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    netloc = host if port in (None, _DEFAULT_PORTS.get(parts.scheme)) else f"{host}:{port}"
    return urlunsplit((parts.scheme.lower(), netloc, parts.path or "/", parts.query, ""))


def extract_links(html: str | bytes, base_url: str) -> list[str]:
    """Same-site page links of ``html`` in document order, absolute, normalised, deduplicated.

    Honours ``<base href>``; skips fragments-only, ``mailto:``/``javascript:`` and links to
    assets that are never knowledge (images, scripts, archives, media, fonts).
    """
    if isinstance(html, bytes):
        html = decode_bytes(html, _html_charset(html))
    tree = LexborHTMLParser(html)
    base = base_url
    base_node = tree.css_first("base[href]")
    if base_node is not None:
        base = urljoin(base_url, (base_node.attributes.get("href") or "").strip())
    seen: dict[str, None] = {}
    for anchor in tree.css("a[href], area[href]"):
        href = (anchor.attributes.get("href") or "").strip()
        if not href or href.startswith("#"):
            continue
        try:
            absolute = urljoin(base, href)
        except ValueError:
            continue
        if not same_site(absolute, base_url):
            continue
        link = normalise_url(absolute)
        if PurePosixPath(urlsplit(link).path).suffix.lower() in _SKIP_SUFFIXES:
            continue
        seen.setdefault(link, None)
    return list(seen)


@dataclass
class SitemapURL:
    loc: str
    lastmod: str | None = None


@dataclass
class Sitemap:
    """A parsed sitemap: page ``urls`` (a urlset) and/or child ``sitemaps`` (a sitemapindex)."""

    urls: list[SitemapURL] = field(default_factory=list)
    sitemaps: list[str] = field(default_factory=list)


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1].lower()


def parse_sitemap(data: str | bytes, *, base_url: str | None = None) -> Sitemap:
    """Parse sitemap XML (urlset or sitemapindex, gzip or not) or a plain-text sitemap.

    With ``base_url`` only same-site URLs are kept (the protocol requires it, and a hostile
    sitemap should not steer the crawler elsewhere). DOCTYPE/entity declarations are
    refused outright, which rules out entity-expansion bombs.
    """
    if isinstance(data, bytes):
        if data[:2] == b"\x1f\x8b":
            try:
                decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
                data = decompressor.decompress(data, MAX_SITEMAP_BYTES)
            except zlib.error as exc:
                raise ExtractError("bad_sitemap", f"bad gzip data: {exc}") from None
            if decompressor.unconsumed_tail:
                raise ExtractError("bad_sitemap", "the sitemap is larger than 50 MB uncompressed")
        text = decode_bytes(data)
    else:
        text = data
    text = text.lstrip("\ufeff").strip()
    result = Sitemap()

    def keep(url: str) -> bool:
        url = url.strip()
        return (
            bool(url) and urlsplit(url).scheme in ("http", "https") and (base_url is None or same_site(url, base_url))
        )

    if not text.startswith("<"):
        for line in text.splitlines():
            if keep(line) and len(result.urls) < MAX_SITEMAP_URLS:
                result.urls.append(SitemapURL(loc=line.strip()))
        return result
    if re.search(r"<!(DOCTYPE|ENTITY)", text, re.I):
        raise ExtractError("bad_sitemap", "DOCTYPE and entity declarations are not allowed in sitemaps")
    try:
        root = ElementTree.fromstring(text)
    except ElementTree.ParseError as exc:
        raise ExtractError("bad_sitemap", f"invalid XML: {exc}") from None
    kind = _local(root.tag)
    if kind not in ("urlset", "sitemapindex"):
        raise ExtractError("bad_sitemap", f"unexpected root element <{kind}>")
    for entry in root:
        name = _local(entry.tag)
        if name not in ("url", "sitemap"):
            continue
        fields = {_local(child.tag): (child.text or "").strip() for child in entry}
        loc = fields.get("loc", "")
        if not keep(loc):
            continue
        if name == "sitemap":
            result.sitemaps.append(loc)
        elif len(result.urls) < MAX_SITEMAP_URLS:
            result.urls.append(SitemapURL(loc=loc, lastmod=fields.get("lastmod") or None))
    return result


def sitemaps_from_robots(robots_txt: str) -> list[str]:
    """The ``Sitemap:`` URLs named in a robots.txt."""
    found = []
    for line in robots_txt.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() == "sitemap" and value.strip().startswith(("http://", "https://")):
            found.append(value.strip())
    return found
