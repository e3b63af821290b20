"""The adapters chained as the assistant uses them, through the shared pytest fixtures:
fetch → extract → chunk → embed → rank → prompt → stream (and the no-LLM answer)."""
from __future__ import annotations

import pytest
from pyapp.knowledge.chunking import chunk_document
from pyapp.knowledge.extract import SUPPORTED_TYPES, extract, extract_links
from pyapp.net.safe_fetch import SafeFetcher
from pyapp.providers.embeddings import OpenAICompatibleEmbedder
from pyapp.providers.llm import AnthropicLLM, build_prompt, extractive_answer
from support.fakes.llm_servers import Reply


@pytest.mark.asyncio
async def test_import_retrieve_and_answer(fake_website, fake_openai, fake_anthropic):
    fetcher = SafeFetcher(allow_hosts={"127.0.0.1"})
    pages, queue, seen = [], [fake_website.url("/")], set()
    while queue:  # a miniature same-site crawl
        url = queue.pop(0)
        if url in seen:
            continue
        seen.add(url)
        result = await fetcher.fetch(url, allowed_types=SUPPORTED_TYPES)
        doc = extract(result.body, content_type=result.content_type, url=result.url)
        pages.append(doc)
        if doc.kind == "html":
            queue.extend(extract_links(result.body, result.url))
    assert {d.kind for d in pages} == {"html", "pdf"}
    assert fake_website.url("/private") not in seen

    chunks = [(doc, chunk) for doc in pages for chunk in chunk_document(doc)]
    embedder = OpenAICompatibleEmbedder(fake_openai.base_url, "test-key", "fake-embedding")
    vectors = await embedder.embed([c.embedding_text for _d, c in chunks])
    question = "When are refunds paid back?"
    [query] = await embedder.embed_queries([question])
    scored = sorted(((sum(a * b for a, b in zip(query, v, strict=True)), d, c)
                     for (d, c), v in zip(chunks, vectors, strict=True)),
                    key=lambda row: -row[0])
    passages = [{"title": d.title, "url": d.url, "heading_path": " > ".join(c.heading_path), "text": c.text,
                 "score": s} for s, d, c in scored[:3]]
    assert "refund" in passages[0]["text"].lower()

    answer = extractive_answer(question, passages, min_score=0.1)
    assert answer is not None and "five business days" in answer.text and answer.citations[0] == 1

    fake_anthropic.script.append(Reply.text("Refunds are paid within five business days [1]."))
    llm = AnthropicLLM(fake_anthropic.base_url, "test-key", "fake-claude")
    messages = build_prompt("You are Acme's assistant.", passages, [], question, 2000)
    text = "".join([delta async for delta in llm.stream_chat(messages)])
    assert text.endswith("[1].")
    sent = fake_anthropic.requests[0].json
    assert "[1] " in sent["system"] and sent["messages"] == [{"role": "user", "content": question}]
