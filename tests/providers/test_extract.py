"""Text extraction (HTML, PDF, Markdown, text) and the crawler helpers."""
from __future__ import annotations

import gzip

import pytest
from pyapp.knowledge.extract import (
    ExtractError,
    clean_text,
    extract,
    extract_html,
    extract_links,
    extract_markdown,
    extract_pdf,
    parse_sitemap,
    same_site,
    sitemaps_from_robots,
)
from pyapp.net.safe_fetch import SafeFetcher
from support.fakes.pdf import make_pdf
from support.fakes.website import PDF_TITLE, FakeWebsite

NOISE = ["TRACKING-SCRIPT-NOISE", "HEADER-NOISE", "NAV-NOISE", "SIDEBAR-NOISE", "FORM-NOISE", "FOOTER-NOISE",
         "NOSCRIPT-NOISE", "font-family"]


@pytest.mark.asyncio
async def test_site_pages_extract_without_chrome():
    async with FakeWebsite() as site:
        fetcher = SafeFetcher(allow_hosts={"127.0.0.1"})
        for path in site.page_paths():
            result = await fetcher.fetch(site.url(path))
            doc = extract(result.body, content_type=result.headers["Content-Type"], url=result.url)
            assert doc.kind == "html"
            for marker in NOISE:
                assert marker not in doc.text, (path, marker)
            assert doc.text.startswith("# ")
        billing = extract_html(site.html("/docs/billing"), url=site.url("/docs/billing"))
        assert "## Refund policy" in billing.text
        assert "You can request a full refund within 30 days of purchase." in billing.text
        assert "Basic | $5 / month" in billing.text
        assert [s.heading_path for s in billing.sections] == [
            ["Billing and invoices", "Payment methods"], ["Billing and invoices", "Refund policy"]]
        started = extract_html(site.html("/docs/getting-started"))
        assert started.title == "Getting started"  # the h1, without the site-name suffix
        assert "- Keep the widget within ten metres of the router.\n- Use a password" in started.text
        assert "```\nacme-cli reset --factory\n```" in started.text


def test_html_hidden_content_line_breaks_entities_and_article_header():
    html = """<html><head><title>T</title></head><body>
      <div hidden>HIDDEN-1</div><p aria-hidden="true">HIDDEN-2</p><p style="display: none">HIDDEN-3</p>
      <div class="cookie-banner">We use cookies</div>
      <article><header><h1>Shipping &amp; returns</h1></header>
      <p>Line one<br>Line   two &mdash; caf&eacute;</p><h3>Small print</h3><p>Fine.</p></article>
      </body></html>"""
    doc = extract_html(html)
    assert "HIDDEN" not in doc.text and "cookies" not in doc.text
    assert doc.text.startswith("# Shipping & returns")
    assert "Line one\nLine two — café" in doc.text
    assert "### Small print\n\nFine." in doc.text


def test_link_bars_breadcrumbs_and_pagers_are_chrome_but_sections_named_after_them_are_content():
    # DocBook XSL's navigation tables (every page of the PostgreSQL docs) and its chapter pages'
    # table of contents, texinfo's (section-toc; mini-toc since texinfo 7), Bootstrap's breadcrumb
    # and pagination, and sections whose heading-made ids contain those words (Python's
    # http.cookies docs: "cookie-objects"; IDLE's "editing-and-navigation").
    html = """<html><head><title>CREATE INDEX</title></head><body>
      <div class="navheader"><table summary="Navigation header"><tr><th colspan="3">CREATE INDEX</th></tr>
        <tr><td><a accesskey="p" href="a.html">Prev</a></td><td><a href="u.html">Up</a></td>
        <th>SQL Commands</th><td><a href="n.html">Next</a></td></tr></table><hr></div>
      <ol class="breadcrumb"><li><a href="/">Docs</a></li><li>Indexes</li></ol>
      <div class="refentry"><h2>CREATE INDEX</h2><p>CREATE INDEX constructs an index.</p>
      <div class="toc"><p><strong>Table of Contents</strong></p><dl><dt><a href="s.html">11.8. Partial Indexes</a></dt></dl></div>
      <h3><a class="toc-backref" href="#id1">Examples</a></h3><h4 class="no-toc">Notes</h4>
      <ul class="section-toc"><li><a href="v.html">Basic Vectorization</a></li></ul>
      <ul class="mini-toc"><li><a href="b.html">Broadcasting</a></li></ul>
      <section id="editing-and-navigation"><h3>Editing and navigation</h3><p>Arrow keys move around.</p></section>
      <section id="cookie-objects"><h3>Cookie objects</h3><p>BaseCookie.value_decode(val)</p></section></div>
      <ul class="pagination"><li><a href="?p=2">2</a></li></ul>
      <div id="sidebar"><p>SIDEBAR-NOISE</p></div>
      <div class="navfooter"><table summary="Navigation footer"><tr><td><a href="a.html">Prev</a></td>
        <td><a href="n.html">Next</a></td></tr><tr><td>CREATE GROUP</td><td><a href="index.html">Home</a></td>
        <td>CREATE LANGUAGE</td></tr></table></div></body></html>"""
    doc = extract_html(html)
    assert doc.text.startswith("## CREATE INDEX\n\nCREATE INDEX constructs an index.")
    assert "Arrow keys move around." in doc.text and "BaseCookie.value_decode(val)" in doc.text
    assert "### Examples" in doc.text  # Sphinx's heading link back to the contents is the heading
    assert "#### Notes" in doc.text  # a heading kept out of a table of contents is still content
    for chrome in ("Prev", "Next", "Home", "SQL Commands", "CREATE GROUP", "CREATE LANGUAGE", "Docs", "SIDEBAR-NOISE",
                   "Table of Contents", "Partial Indexes", "Basic Vectorization", "Broadcasting"):
        assert chrome not in doc.text, chrome


def test_pagers_known_by_their_labels_are_chrome():
    # texinfo's makeinfo (the GNU Octave manual): a "Next/Previous/Up" paragraph in a div of class
    # "header" atop every node (and again below long ones). A hand-made "« Previous | Next »" bar
    # goes too; text and links that only mention such words stay.
    html = """<html><head><title>Basic Vectorization (GNU Octave (version 7.3.0))</title></head><body>
      <div class="section" id="Basic-Vectorization"><div class="header"><p>
      Next: <a href="Broadcasting.html" accesskey="n" rel="next">Broadcasting</a>, Up: <a href="Vectorization.html"
      accesskey="u" rel="up">Vectorization and Faster Code Execution</a> &nbsp; [<a href="index.html#SEC_Contents"
      rel="contents">Contents</a>][<a href="Concept-Index.html" rel="index">Index</a>]</p></div><hr>
      <h3 class="section">19.1 Basic Vectorization</h3><p>Write code that avoids loops. See
      <a href="Index-Expressions.html">Index Expressions</a>.</p>
      <p>Next, the iterator: <a href="f.html">next()</a> and <a href="g.html">iter()</a>.</p>
      <ul><li><a href="up.html">Up</a> is where the index lives.</li><li><a href="n.html">next()</a></li>
      <li><code>previous</code> <a href="fs.html#class-fsstats">&lt;fs.Stats&gt;</a></li></ul>
      <p><a href="p.html">&laquo; Previous</a> | <a href="n.html">Next &raquo;</a></p>
      <table><tr class="header"><th>Operator</th><th>Meaning</th></tr><tr><td>.*</td><td>times</td></tr></table>
      </div></body></html>"""
    doc = extract_html(html)
    assert doc.text.startswith("### 19.1 Basic Vectorization\n\nWrite code that avoids loops. See Index Expressions.")
    assert "Next, the iterator: next() and iter()." in doc.text and "- Up is where the index lives." in doc.text
    assert "- next()" in doc.text and "Operator | Meaning" in doc.text
    assert "- previous <fs.Stats>" in doc.text  # Node.js's docs: an argument named previous, and its type
    for chrome in ("Broadcasting", "Faster Code", "Contents", "[", "Previous", "Next »"):
        assert chrome not in doc.text, chrome
    # A pager's links do not count toward the page's link density (a chapter page with a short
    # introduction was skipped as a link list once its pager's text was gone but its links counted).
    chapter = extract_html("""<html><body><div class="header"><p>Next: <a href="n.html">Nonlinear Equations and
      Their Many Solvers</a>, Previous: <a href="p.html">Linear Algebra and Matrix Factorizations</a></p></div>
      <h2>19 Vectorization</h2><p>Vectorization uses whole-array operations instead of loops.</p>
      <ul><li><a href="b.html">Basic Vectorization</a></li></ul></body></html>""")
    assert chapter.text.startswith("## 19 Vectorization") and chapter.link_density < 0.3, chapter.link_density


@pytest.mark.timeout(60)  # a bound on a hang, not a timing: the old pattern took 17 s for 16 labels, doubling with each
def test_a_link_text_of_many_pager_labels_is_read_in_linear_time():
    # "(separators* label separators*)+" split each run of separators between two labels every way
    # before failing: a block whose link text was 40 "next" and a "!" never finished extracting.
    html = "<p><a href='n.html'>" + "next  " * 40 + "!</a></p><p>Body text.</p>"
    assert extract_html(html).text == ("next " * 40).strip() + " !\n\nBody text."


def test_html_bytes_use_the_meta_charset_and_hostile_characters_are_removed():
    html = '<html><head><meta charset="windows-1252"><title>Caf\xe9</title></head><body><p>Cr\xe8me</p></body></html>'
    doc = extract_html(html.encode("cp1252"))
    assert doc.title == "Café" and "Crème" in doc.text
    assert clean_text("a\x00b\u202ec\u200bd\r\ne\n\n\n\nf") == "abcd\ne\n\nf"


def test_deeply_nested_html_does_not_recurse():
    html = "<div>" * 20000 + "deep text" + "</div>" * 20000
    assert "deep text" in extract_html(html).text


def test_pdf_text_and_title():
    data = make_pdf([["First page line", "Second line"], ["Page two text"]], title="Manual")
    doc = extract_pdf(data)
    assert doc.title == "Manual" and doc.kind == "pdf"
    assert "First page line\nSecond line" in doc.text and "Page two text" in doc.text
    untitled = extract(make_pdf([["Quick start"]]), content_type="application/pdf")
    assert untitled.title == "Quick start"
    with pytest.raises(ExtractError) as info:
        extract_pdf(b"%PDF-1.4 this is not really a pdf")
    assert info.value.code == "bad_pdf"


@pytest.mark.asyncio
async def test_pdf_from_the_site():
    async with FakeWebsite() as site:
        result = await SafeFetcher(allow_hosts={"127.0.0.1"}).fetch(site.url("/guide.pdf"))
        doc = extract(result.body, content_type=result.content_type, url=result.url)
        assert doc.title == PDF_TITLE
        assert "The warranty covers manufacturing defects for two years." in doc.text


def test_markdown_front_matter_and_setext_headings():
    doc = extract_markdown("---\ntitle: 'Install guide'\nauthor: x\n---\nIntro\n=====\n\nBody text.\n\nPart\n----\nMore.")
    assert doc.title == "Install guide"
    assert doc.text == "# Intro\n\nBody text.\n\n## Part\nMore."


@pytest.mark.parametrize("data,content_type,name,kind", [
    (b"<!DOCTYPE html><html><body><p>x</p></body></html>", None, None, "html"),
    (b"# Title\n\ntext", "text/plain", "notes.md", "markdown"),
    (b"# Title\n\ntext", "application/octet-stream", "https://x.test/readme.markdown", "markdown"),
    (b"plain words", None, "a.txt", "text"),
    (b"plain words", None, None, "text"),
    (make_pdf([["x"]]), "application/octet-stream", None, "pdf"),
])
def test_extract_dispatch(data, content_type, name, kind):
    assert extract(data, content_type=content_type, filename=name).kind == kind


def test_unsupported_content_is_refused():
    with pytest.raises(ExtractError) as info:
        extract(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)), content_type="image/png")
    assert info.value.code == "unsupported_type"


def test_extract_links_keeps_same_site_pages_only():
    html = """<html><head><base href="/docs/"></head><body>
      <a href="intro">Intro</a> <a href="../faq#top">FAQ</a> <a href="/faq">FAQ again</a>
      <a href="#section">Anchor</a> <a href="mailto:a@b.test">Mail</a> <a href="javascript:alert(1)">JS</a>
      <a href="https://other.test/page">Other</a> <a href="http://site.test:8081/x">Other port</a>
      <a href="https://SITE.test/secure">Same host over https</a> <a href="/logo.png">Logo</a>
      <a href="/file.pdf">PDF</a> <a href="/search?q=1">Search</a></body></html>"""
    links = extract_links(html, "http://site.test/docs/index.html")
    assert links == ["http://site.test/docs/intro", "http://site.test/faq", "https://site.test/secure",
                     "http://site.test/file.pdf", "http://site.test/search?q=1"]
    assert same_site("https://site.test./a", "http://site.test/") and not same_site("ftp://site.test/", "http://site.test/")


@pytest.mark.asyncio
async def test_sitemap_and_robots_from_the_site():
    async with FakeWebsite() as site:
        fetcher = SafeFetcher(allow_hosts={"127.0.0.1"})
        robots = await fetcher.fetch(site.url("/robots.txt"))
        [sitemap_url] = sitemaps_from_robots(robots.text())
        index = parse_sitemap((await fetcher.fetch(site.url("/sitemap_index.xml"))).body, base_url=site.url())
        assert index.sitemaps == [sitemap_url] and index.urls == []
        sitemap = parse_sitemap((await fetcher.fetch(sitemap_url)).body, base_url=site.url())
        assert [u.loc for u in sitemap.urls] == [site.url(p) for p in site.sitemap_paths()]
        assert sitemap.urls[0].lastmod == "2026-11-01"


def test_sitemap_variants_and_hostile_input():
    xml = ('<?xml version="1.0"?><urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">'
           "<url><loc> https://a.test/one </loc></url><url><loc>https://evil.test/x</loc></url>"
           "<url><loc>file:///etc/passwd</loc></url></urlset>")
    assert [u.loc for u in parse_sitemap(xml).urls] == ["https://a.test/one", "https://evil.test/x"]
    assert [u.loc for u in parse_sitemap(gzip.compress(xml.encode()), base_url="https://a.test/").urls] == [
        "https://a.test/one"]
    assert [u.loc for u in parse_sitemap("https://a.test/1\nhttps://a.test/2\n").urls] == [
        "https://a.test/1", "https://a.test/2"]
    bomb = '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">]><urlset><url><loc>&lol;</loc></url></urlset>'
    for bad in (bomb, "<urlset><url>", "<html><body>not a sitemap</body></html>"):
        with pytest.raises(ExtractError) as info:
            parse_sitemap(bad)
        assert info.value.code == "bad_sitemap"
