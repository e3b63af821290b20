"""Misspelt question words (parley.knowledge_query_terms, sql/51_knowledge_search.sql): a word no
passage of the chatbot holds is read as a word of the passages the question's vector found best,
when it is a slip or two away ("histogramm", a swap "lnies") or two of the question's words run
together ("eigen values"). Only those passages lend words: never another tenant's or another
chatbot's, never a passage the caller names by id, and never without a vector.

Vectors here are unit vectors set by hand (one direction per passage), so the test says which
passages the question's vector finds without the model."""

import json

import numpy as np
from support.knowledge import make_tenant
from tests.knowledge.pydocs import evaluation as ev

DOCS = [
    (
        "histograms",
        "# Histograms\n\nhist (y) draws a histogram of the data in y, counting the values in each bin;"
        " normalize scales the heights.",
    ),
    ("lines", "# Plotting lines\n\nplot (x, y) draws the lines through the points of x and y on the current axes."),
    (
        "eigen",
        "# Eigenvalues\n\neig (A) returns the eigenvalues of a square matrix, and with two outputs its eigenvectors.",
    ),
]


def unit(i: int) -> np.ndarray:
    v = np.zeros(384, dtype=np.float32)
    v[i] = 1.0
    return v


async def _arrange(tenant, docs=DOCS, chatbot_id=None, filler: int = 200) -> dict[str, int]:
    """The documents as file sources of the chatbot, each passage given its own direction (the i-th
    document unit(i)), and `filler` passages about something else without vectors; returns document
    name -> its passage's id."""
    chatbot_id = chatbot_id or tenant.chatbot_id
    names = await ev.ingest_texts(await tenant.pool(), tenant.id, chatbot_id, docs, None)
    if filler:
        chunks = [
            {"text": f"Crate {i} holds boxes of screws, stacked by size on shelf {i}.", "heading_path": ""}
            for i in range(filler)
        ]
        async with await tenant.tx() as conn:
            source = await conn.fetchval(
                "SELECT s.id FROM parley.create_knowledge_source($1, 'file', 'Filler', NULL, 'filler.md') s", chatbot_id
            )
            await conn.execute(
                "SELECT parley.ingest_document($1, 'filler.md', NULL, 'Filler', $2::jsonb)", source, chunks
            )
    ids = {}
    for i, (name, _) in enumerate(docs):
        document_id = next(d for d, n in names.items() if n == name)
        chunk = await tenant.owner.fetchval(
            "SELECT id FROM parley.knowledge_chunks WHERE document_id = $1::uuid", document_id
        )
        await tenant.owner.execute(
            "UPDATE parley.knowledge_chunks SET embedding = $2::text::vector, embedding_model = 'test' WHERE id = $1",
            chunk,
            str(unit(i).tolist()),
        )
        ids[name] = chunk
    # Nothing waits to be embedded (the filler stays without vectors): with most passages still in the
    # queue, knowledge_search answers from full text alone (parley.knowledge_vectors_ready).
    await tenant.owner.execute("DELETE FROM parley.embedding_jobs WHERE tenant_id = $1", tenant.id)
    return ids


async def _search(tenant, question: str, vector, chatbot_id=None) -> tuple[list, dict]:
    async with await tenant.tx() as conn:
        rows = await conn.fetch(
            "SELECT * FROM parley.knowledge_search($1, $2, 5, $3)", chatbot_id or tenant.chatbot_id, question, vector
        )
    signals = rows[0]["signals"] if rows else {}
    return rows, json.loads(signals) if isinstance(signals, str) else dict(signals or {})


async def _terms(tenant, question: str, near: list[int] | None, chatbot_id=None) -> dict[str, tuple[str, int]]:
    async with await tenant.tx() as conn:
        rows = await conn.fetch(
            "SELECT * FROM parley.knowledge_query_terms($1, 'english', $2, $3)",
            chatbot_id or tenant.chatbot_id,
            question,
            near,
        )
    return {r["asked"]: (r["term"], r["df"]) for r in rows}


async def test_a_misspelt_word_is_read_as_a_word_of_the_passages_the_vector_found(tenant):
    ids = await _arrange(tenant)
    rows, signals = await _search(tenant, "histogramm of my data", unit(0))
    assert signals["read"] == {"histogramm": "histogram"}, signals
    assert rows[0]["chunk_id"] == ids["histograms"] and signals["coverage"] == 1.0 and signals["known"] == 1.0
    # Two neighbouring letters swapped count as one slip ("lnies": Levenshtein says two).
    _, signals = await _search(tenant, "plot two lnies", unit(1))
    assert signals["read"] == {"lni": "line"}, signals
    # A word split in two: "eigen" and "values" run together are a word of the passage.
    _, signals = await _search(tenant, "eigen values of a matrix", unit(2))
    assert signals["read"] == {"eigen": "eigenvalu"}, signals
    # Without a vector nothing lends words: the slip stays a word the knowledge lacks.
    _, signals = await _search(tenant, "histogramm of my data", None)
    assert signals.get("read") is None and signals["known"] < 1, signals
    assert (await _terms(tenant, "histogramm of my data", None))["histogramm"] == ("histogramm", 0)


async def test_at_most_five_words_are_read(tenant):
    # Each unknown word is compared with every word of 20 passages: a question of made-up words took
    # 2.7 s when all were; the five longest are.
    await _arrange(tenant)
    question = "nromalize histogramm coutning heighhts scalles valuues"
    assert all(df == 0 for _, df in (await _terms(tenant, question, None)).values())
    _, signals = await _search(tenant, question, unit(0))
    assert len(signals["read"]) == 5 and "valuu" not in signals["read"], signals


async def test_a_small_knowledge_base_reads_nothing(tenant):
    # 3 passages: the 20 best of them are all of them, so a word near one of their words is no sign of a
    # slip ("getting" is one letter from "setting" in any help centre that has no "get").
    await _arrange(tenant, filler=0)
    _, signals = await _search(tenant, "histogramm of my data", unit(0))
    assert signals.get("read") is None and signals["chunks"] == 3, signals


async def test_a_word_far_from_the_passages_or_short_or_only_elsewhere_is_not_read(tenant):
    ids = await _arrange(tenant)
    for question, vector in (
        ("xylophone data", unit(0)),  # far from every word
        ("lins plot", unit(1)),  # four letters: no slip allowed ("lines" is one away)
        ("my data in 10.0.0.5", unit(0)),
    ):  # not a word
        _, signals = await _search(tenant, question, vector)
        assert signals.get("read") is None, (question, signals)
    # Only the passages the vector found lend words: "histogram" is one swap from "hitsogram", but not in these.
    assert (await _terms(tenant, "hitsogram", [ids["lines"], ids["eigen"]]))["hitsogram"] == ("hitsogram", 0)
    assert (await _terms(tenant, "hitsogram", [ids["histograms"]]))["hitsogram"] == ("histogram", 1)
    # ... and only as far as the vector list's best ones: the histogram passage ranked past them lends nothing.
    terms = await _terms(tenant, "histogramm", [ids["lines"]] * 20 + [ids["histograms"]])
    assert terms["histogramm"] == ("histogramm", 0)


async def test_a_long_run_of_letters_in_a_question_and_a_passage_is_not_read(tenant):
    # A pasted sequence of letters against a passage that holds one of nearly its length (a DNA
    # sequence, say): before, Levenshtein (at most 255 characters) raised, and the search failed.
    sequence = "ACGT" * 75  # 300 letters
    docs = [("sequence", f"# Reads\n\nA read of 300 bases: {sequence} aligned to the reference."), *DOCS[1:]]
    await _arrange(tenant, docs)
    rows, signals = await _search(tenant, f"align {sequence[:-1]}A please", unit(0))  # one letter off
    assert rows and signals.get("read") is None, signals
    async with await tenant.tx() as conn:
        assert await conn.fetchval("SELECT parley.knowledge_spelling_distance($1, $2)", "a" * 300, "a" * 299) is None


async def test_only_the_first_words_of_a_huge_heading_lend_spellings(tenant):
    # A document's heading is repeated, uncut, on each of its passages: one of 20,000 words made every
    # question with an unknown word split and compare 3 MB of the best passages' words (300 ms). Only
    # the first 600 characters of a heading path (300 of a title, 3,000 of a passage's text: more than
    # the chunker ever makes) lend words: a slip of the heading's last word is no longer read, a slip
    # of a word of the passage's text still is.
    filler = " ".join("".join(chr(97 + (i * 7 + k * 3) % 26) for k in range(6)) for i in range(1200))
    docs = [("histograms", f"# Histograms {filler} quokkalike\n\n{DOCS[0][1].split(chr(10), 2)[2]}"), *DOCS[1:]]
    await _arrange(tenant, docs)
    assert (await _terms(tenant, "quokkalike", None))["quokkalik"][1] > 0  # the word is the knowledge's
    _, signals = await _search(tenant, "quokkalikr histogramm", unit(0))
    assert signals["read"] == {"histogramm": "histogram"}, signals


async def test_another_tenants_or_chatbots_words_are_never_read(settings, owner_conn, tenant):
    # This tenant's chatbot has no histogram passage; another tenant's, and this tenant's second chatbot, have.
    await _arrange(tenant, DOCS[1:])
    other = await make_tenant(settings, owner_conn)
    try:
        theirs = await _arrange(other)
        second = await owner_conn.fetchval(
            "INSERT INTO parley.chatbots (tenant_id, name, config) VALUES"
            " ($1, 'Second', '{\"language\": \"en\"}') RETURNING id",
            tenant.id,
        )
        mine_elsewhere = await _arrange(tenant, DOCS, chatbot_id=second)
        assert (await _search(other, "histogramm of my data", unit(0)))[1]["read"] == {"histogramm": "histogram"}
        # The vector that finds their histogram passage finds only this chatbot's own passages here.
        _, signals = await _search(tenant, "histogramm of my data", unit(0))
        assert signals.get("read") is None, signals
        # Naming their passages, or the second chatbot's, as the neighbours lends nothing either.
        for near in ([theirs["histograms"]], [mine_elsewhere["histograms"]]):
            assert (await _terms(tenant, "histogramm of my data", near))["histogramm"] == ("histogramm", 0)
        # Their chatbot asked from this tenant: nothing of theirs is known or read.
        terms = await _terms(tenant, "histogramm of my data", [theirs["histograms"]], chatbot_id=other.chatbot_id)
        assert terms == {"histogramm": ("histogramm", 0), "data": ("data", 0)}
        rows, _ = await _search(tenant, "histogramm of my data", unit(0), chatbot_id=other.chatbot_id)
        assert rows == []
    finally:
        await other.close()


async def test_spelling_distance(tenant):
    async with await tenant.tx() as conn:
        rows = await conn.fetch(
            "SELECT a, b, parley.knowledge_swap_distance(a, b) AS swap, parley.knowledge_spelling_distance(a, b) AS d"
            " FROM unnest($1::text[], $2::text[]) AS u(a, b)",
            ["stirng", "histogramm", "histgoramm", "bode", "julia", "docker", "xylophone", "ab"],
            ["string", "histogram", "histogram", "code", "julian", "dock", "telephone", "ba"],
        )
    got = {r["a"]: (r["swap"], r["d"]) for r in rows}
    assert got == {
        "stirng": (1, 1),  # a swap is one slip
        "histogramm": (1, 1),
        "histgoramm": (2, 2),  # ten letters may hold two
        "bode": (1, None),  # four letters hold none
        "julia": (1, 1),  # near enough by spelling: only the passages a question's vector found guard it
        "docker": (2, None),
        "xylophone": (3, None),
        "ab": (1, None),
    }
