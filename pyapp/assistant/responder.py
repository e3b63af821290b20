"""The AI assistant: the realtime bot responder, grounded in the chatbot's knowledge.

For each visitor message stored while the conversation is with the bot (the visitor socket runs
`respond` as a background task on the instance holding the visitor's socket):

1. Silent unless the conversation is still `bot` (a human owns it, or it waits for one).
2. A handoff phrase ("talk to a human", "hablar con una persona", …), or a yes ("yes", "ja
   gerne", "sí", "oui", "evet", …) right after a message that offered a person → the human transition.
3. AI quota (ai_msgs_per_day) checked BEFORE any model call: over → a system notice
   offering a person, no LLM call.
4. knowledge_search (query embedded when an embedder is configured, else full text).
5. The provider of the chatbot, else the tenant's, else the global env (PARLEY_LLM…), else
   none: with an LLM the answer streams to local sockets as `stream` frames; without one
   the extractive answer (quotes with citations) when retrieval is confident, else
   "I don't know" with an offer of a person (meta offer_human: the widget shows a button).
6. The complete reply is stored once with post_message (author bot, meta citations,
   stream_id, grounded); post_message counts ai_messages and enforces the quota again.
7. handoff.miss_threshold ungrounded answers in a row → waiting_human: the rule is SQL's
   (store_message counts meta.grounded = false answers in conversations.bot_misses and hands
   off in the answer's own transaction); here only the lead form and the notice follow.
A provider failure stores a system notice instead. The visitor may disconnect at any time:
the turn does not depend on the socket, and the stored reply is replayed on reconnect.
The turn is a claim in the database (pyapp/widget/turns.py, sql/53_bot_turns.sql): what it
says (the answer, a notice, the handoff) is stored under its question's key, bot:<question id>,
in the transaction that ends the turn, so a turn picked up by another server after this one died,
or run twice, says one thing. A run that lost its turn to another (`turn.lost`) says nothing more;
one whose turn is not its own at all stops at its first read (`_state`), where `TurnLost` is raised.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
import unicodedata
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
from aiohttp import web

from pyapp import metrics
from pyapp.assistant.provider import resolve_llm
from pyapp.db import database_outage
from pyapp.errors import from_postgres
from pyapp.knowledge.ingest import get_embedder
from pyapp.knowledge.search import answerable, query_vector, search_passages
from pyapp.net import FetchError
from pyapp.providers.llm import LLMError
from pyapp.providers.prompt import build_prompt, extractive_answer
from pyapp.types import BOT_MESSAGE_BODY_MAX
from pyapp.widget.hooks import BotTurn, TurnLost, visitor_hooks

log = logging.getLogger("parley.assistant")

TOP_K = 5
HISTORY_MESSAGES = 10
# Retrieval confidence of a passage, 0..1: the better of its cosine similarity to the
# question and the share of the question's terms it contains. Whether a reply is grounded at
# all is knowledge_search's decline rule; then only passages reaching USE_AT go to the prompt.
USE_AT = 0.35

HANDOFF_PHRASES = {
    "en": [
        "talk to a human",
        "speak to a human",
        "talk to a person",
        "speak to a person",
        "talk with a human",
        "speak with a human",
        "talk to someone",
        "speak to someone",
        "real person",
        "human agent",
        "live agent",
        "talk to an agent",
        "speak to an agent",
        "customer service representative",
        "talk to support staff",
        "connect me to a human",
        "i want a human",
        "human please",
    ],
    "es": [
        "hablar con una persona",
        "hablar con un humano",
        "hablar con alguien",
        "persona real",
        "agente humano",
        "hablar con un agente",
        "quiero un humano",
        "atencion humana",
    ],
    "fr": [
        "parler a un humain",
        "parler a une personne",
        "parler avec un humain",
        "parler a quelqu'un",
        "vraie personne",
        "agent humain",
        "parler a un conseiller",
        "un humain svp",
    ],
    "de": [
        "mit einem menschen sprechen",
        "mit einem mitarbeiter sprechen",
        "mit jemandem sprechen",
        "echten menschen",
        "menschlichen mitarbeiter",
        "echte person",
        "mit einer person sprechen",
    ],
    "tr": [
        "insanla konusmak",
        "insanla gorusmek",
        "bir insanla",
        "musteri temsilcisi",
        "canli destek",
        "gercek bir insan",
        "temsilciyle gorusmek",
        "yetkiliyle gorusmek",
    ],
}
HANDOFF_WORDS = {"human", "agent", "operator", "humano", "humain", "mensch", "insan", "temsilci", "person"}
# A yes to "would you like to talk to a person?" (folded: no accents, lower case). Only a short
# answer counts: "yes, but what about shipping?" is a new question.
AFFIRMATIVE = {
    "en": ["yes", "yeah", "yep", "yup", "sure", "ok", "okay", "please", "of course", "y", "absolutely", "definitely"],
    "es": ["si", "claro", "vale", "por favor", "de acuerdo", "por supuesto", "bueno", "dale"],
    "fr": ["oui", "ouais", "d'accord", "bien sur", "volontiers", "svp", "s'il vous plait", "ok", "avec plaisir"],
    "de": ["ja", "gerne", "gern", "klar", "natuerlich", "naturlich", "jawohl", "ok", "okay", "bitte", "sehr gerne"],
    "tr": ["evet", "tamam", "olur", "lutfen", "tabii", "tabi", "tabii ki", "elbette", "peki"],
}

# The widget's languages: what language_of answers. The texts said in them are system texts
# (sql/49_system_texts.sql: per tenant and locale, edited in the console).
LANGUAGES = ("en", "es", "fr", "de", "tr")


def _fold(text: str) -> str:
    """Case-, accent- and punctuation-insensitive form for phrase matching (İ/ş/ü/é → i/s/u/e)."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    plain = "".join(ch for ch in decomposed if not unicodedata.combining(ch)).replace("ı", "i")
    return " ".join(re.sub(r"[^\w']+", " ", plain).split())


_PHRASES = [_fold(p) for group in HANDOFF_PHRASES.values() for p in group]


_YES = {_fold(p) for group in AFFIRMATIVE.values() for p in group}


def says_yes(text: str) -> bool:
    """A short yes in en/es/fr/de/tr: "yes", "Ja, gerne!", "sí, por favor", "oui merci", "evet lütfen"."""
    words = _fold(text).split()
    if not words or len(words) > 4:
        return False
    return any(" ".join(words[:n]) in _YES for n in (3, 2, 1))


def wants_human(text: str) -> bool:
    """Does the visitor ask for a person? Phrases in en/es/fr/de/tr, or a bare 'human'/'agent'."""
    folded = _fold(text)
    if folded in HANDOFF_WORDS or folded.rstrip("s") in HANDOFF_WORDS:
        return True
    padded = f" {folded} "
    return any(f" {p} " in padded for p in _PHRASES)


def language_of(config: dict, locale: str | None = None) -> str:
    """The chatbot's language; with none or "auto", the visitor's (the conversation's locale), else en."""
    for value in (config.get("language"), locale):
        lang = str(value or "").lower().split("-")[0].split("_")[0]
        if lang in LANGUAGES:
            return lang
    return "en"


def confidence(passage: dict) -> float:
    scores = []
    if passage.get("vector_distance") is not None:
        scores.append(1.0 - float(passage["vector_distance"]))
    if passage.get("fts_coverage") is not None:
        scores.append(float(passage["fts_coverage"]))
    return max(scores, default=0.0)


# --------------------------------------------------------------------------- the turn


@dataclass
class TurnState:
    status: str
    config: dict
    quota_left: bool
    lead_mode: str
    has_lead: bool
    has_vectors: bool
    history: list[dict]
    locale: str | None = None  # the language spoken with the visitor (chatbot_language of the conversation's locale)
    offered: bool = False  # the message before the visitor's offered a person


# Everything a turn needs to know before it searches, in one round trip: the conversation and
# its chatbot, the language spoken, the daily AI quota, whether a lead was left, whether the
# chatbot has vectors, the recent history and whether the last message offered a person.
STATE = """
SELECT c.status, parley.spoken_language(b.config, c.locale) AS locale, b.config,
       (SELECT parley.limit_reached(l.ai_msgs_per_day, parley.usage_on('ai_messages'))
          FROM parley.effective_limits(parley.current_tenant_id()) l) AS over,
       EXISTS (SELECT 1 FROM parley.leads WHERE conversation_id = $1) AS has_lead,
       parley.knowledge_uses_vectors(c.chatbot_id) AS has_vectors,
       (SELECT coalesce(jsonb_agg(jsonb_build_object('role', h.author, 'content', h.body) ORDER BY h.id), '[]')
          FROM (SELECT m.id, m.author, m.body FROM parley.messages m
                 WHERE m.tenant_id = parley.current_tenant_id() AND m.conversation_id = $1
                   AND m.author IN ('visitor', 'bot', 'agent') AND m.id < $2
                 ORDER BY m.id DESC LIMIT $3) h) AS history,
       (SELECT m.meta->'offer_human' = 'true'::jsonb FROM parley.messages m
         WHERE m.tenant_id = parley.current_tenant_id() AND m.conversation_id = $1
           AND m.author <> 'note' AND m.id < $2
         ORDER BY m.id DESC LIMIT 1) AS offered
  FROM parley.conversations c
  JOIN parley.chatbots b ON b.tenant_id = c.tenant_id AND b.id = c.chatbot_id
 WHERE c.tenant_id = parley.current_tenant_id() AND c.id = $1"""


async def _state(conn: asyncpg.Connection, turn: BotTurn) -> TurnState | None:
    conv = await conn.fetchrow(STATE, turn.conversation_id, int(turn.message.get("id") or 2**62), HISTORY_MESSAGES)
    if conv is None:
        return None
    config = dict(conv["config"] or {})
    return TurnState(
        status=conv["status"],
        config=config,
        quota_left=not conv["over"],
        lead_mode=str((config.get("lead_capture") or {}).get("mode") or "never"),
        has_lead=bool(conv["has_lead"]),
        has_vectors=bool(conv["has_vectors"]),
        history=list(conv["history"]),
        offered=bool(conv["offered"]),
        locale=conv["locale"],
    )


async def _record(
    turn: BotTurn,
    question: str,
    outcome: str,
    grounded: bool,
    *,
    reply_id=None,
    provider=None,
    passages: int = 0,
    first_token_ms=None,
    total_ms=None,
    status: bool = False,
) -> str | None:
    """Store the turn (assistant_turns); with ``status``, returns the conversation's status
    after it, read in the same transaction (None otherwise or when nothing could be stored)."""
    metrics.BOT_TURNS.labels(outcome).inc()
    async with _best_effort(turn, "assistant turn") as conn:
        await conn.execute(
            "SELECT parley.record_assistant_turn($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            turn.conversation_id,
            question,
            outcome,
            grounded,
            turn.message.get("id"),
            reply_id,
            provider,
            passages,
            first_token_ms,
            total_ms,
        )
        if not status:
            return None
        return await conn.fetchval("SELECT c.status FROM parley.conversations c WHERE c.id = $1", turn.conversation_id)
    return None


async def _say(turn: BotTurn, kind: str, lang: str) -> None:
    """End the turn with a system text (ai_quota, assistant_unavailable: offering a person) as the
    tenant's template for it asks."""
    await turn.say(kind, lang, {"offer_human": True})


@contextlib.asynccontextmanager
async def _best_effort(turn: BotTurn, what: str) -> AsyncIterator[asyncpg.Connection]:
    """The turn's service transaction for a write the reply goes on without: a database error
    rolls it back and is logged, not raised."""
    try:
        async with turn.service_tx() as conn:
            yield conn
    except asyncpg.PostgresError as exc:
        log.warning("%s not stored: %s", what, exc)


async def _declined_text(turn: BotTurn, lang: str, conn: asyncpg.Connection | None = None) -> str:
    """The "I don't know" reply in the visitor's language, as the tenant worded it (in ``conn``'s
    transaction when given)."""
    query = "SELECT parley.system_text('unknown', $1, $2)->>'body'"
    if conn is not None:
        return await conn.fetchval(query, lang, turn.conversation_id)
    async with turn.service_tx() as own:
        return await own.fetchval(query, lang, turn.conversation_id)


def _lead_before_handoff(turn: BotTurn, state: TurnState) -> None:
    if state.lead_mode == "before_handoff" and not state.has_lead:
        fields = (state.config.get("lead_capture") or {}).get("fields") or ["name", "email"]
        turn.relay.broadcast_local(
            turn.tenant_id, turn.conversation_id, {"type": "lead_request", "fields": list(fields)}, agents=False
        )


async def hand_off(turn: BotTurn, state: TurnState, question: str) -> None:
    """Ask for a person (the lead form first when configured so), and say so: one transaction, which
    ends the turn."""
    _lead_before_handoff(turn, state)
    try:
        async with turn.ending() as conn:
            await conn.fetchrow("SELECT * FROM parley.transition_conversation($1, 'human')", turn.conversation_id)
            await conn.fetchval(
                "SELECT parley.post_system_text($1, 'handoff', $2, $3, $4)",
                turn.conversation_id,
                language_of(state.config, state.locale),
                {"offer_human": False},
                turn.key,
            )
    except asyncpg.PostgresError as exc:
        if not _taken_over(exc):
            raise
        return  # a person took the conversation (or closed it) since the turn began: nothing to say
    if turn.ended_here:
        await _record(turn, question, "handoff", False)


async def _handoff_notice(turn: BotTurn, lang: str) -> None:
    """Say that a person is asked for after the answer that reached the misses threshold (once:
    under the turn's key with :handoff)."""
    async with _best_effort(turn, "notice handoff") as conn:
        await conn.fetchval(
            "SELECT parley.post_system_text($1, 'handoff', $2, $3, $4)",
            turn.conversation_id,
            lang,
            {"offer_human": False},
            f"{turn.key}:handoff" if turn.key else None,
        )


def _taken_over(exc: asyncpg.PostgresError) -> bool:
    """SQL refused the bot's step with a 409: the conversation changed hands (or closed) meanwhile."""
    mapped = from_postgres(exc)
    return mapped is not None and mapped.status == 409


def citations_of(text: str, passages: list[dict]) -> list[dict]:
    cited = []
    for n in dict.fromkeys(int(m) for m in re.findall(r"\[(\d{1,2})\]", text)):
        if 1 <= n <= len(passages):
            p = passages[n - 1]
            cited.append({"n": n, "title": p.get("title") or "", "url": p.get("url")})
    return cited


REPLY_RETRY_S = 30.0  # how long a streamed answer waits for the database to store it


async def _store_reply(turn: BotTurn, text: str, meta: dict) -> dict | None:
    """Store the answer the visitor has already seen streamed, ending the turn. Through a database
    outage (a restart, a failover) it is tried again for up to REPLY_RETRY_S, under the turn's key
    (bot:<question id>), so an attempt that committed before its connection was lost is found, not
    stored twice. None when the turn was lost to another run meanwhile (that one answers)."""
    deadline = time.monotonic() + REPLY_RETRY_S
    delay = 0.25
    while not turn.lost:
        try:
            return await turn.reply(text, meta=meta)
        except Exception as exc:
            if not database_outage(exc) or time.monotonic() + delay > deadline:
                raise
        await asyncio.sleep(delay)
        delay = min(delay * 2, 4.0)
    return None


async def respond(turn: BotTurn) -> None:
    """The bot responder (see the module docstring); an unexpected failure still tells the visitor."""
    try:
        await _respond(turn)
    except TurnLost:  # not this run's turn: nothing was read or said
        raise
    except Exception as exc:
        turn.typing(False)
        if database_outage(exc):  # nothing can be stored now: the turn is picked up once it is back
            log.warning("assistant: database unavailable in conversation %s", turn.conversation_id)
            raise
        log.exception("assistant failed in conversation %s", turn.conversation_id)
        if not turn.ended and not turn.lost:
            await _say(turn, "assistant_unavailable", language_of(turn.chatbot_config or {}))


async def _respond(turn: BotTurn) -> None:
    started = time.monotonic()
    question = str(turn.message.get("body") or "").strip()
    async with turn.service_tx() as conn:
        state = await _state(conn, turn)
    if state is None or state.status != "bot" or not question:
        return  # a human owns the conversation (or waits to): the bot stays silent
    lang = language_of(state.config, state.locale)

    if wants_human(question) or (state.offered and says_yes(question)):
        await hand_off(turn, state, question)
        return
    if not state.quota_left:
        await _say(turn, "ai_quota", lang)
        if turn.ended_here:
            await _record(turn, question, "quota", False)
        return

    turn.typing(True)
    embedder = get_embedder() if state.has_vectors else None
    vector = await query_vector(embedder, question)
    async with turn.service_tx() as conn:
        found, _mode = await search_passages(
            conn, turn.chatbot_id, question, TOP_K, vector, embedder.model if embedder else None
        )
        metrics.BOT_SECONDS.labels("retrieval").observe(time.monotonic() - started)
        try:
            llm = await resolve_llm(conn, turn.settings, turn.tenant_id, turn.chatbot_id)
        except (FetchError, ValueError) as exc:
            log.warning("LLM settings unusable for tenant %s: %s", turn.tenant_id, exc)
            llm = False
        # The decline rule is SQL's (parley.knowledge_answerable, via knowledge_search).
        grounded = answerable(found)
        # Without a model a declined question gets the tenant's "I don't know": read it here,
        # in the same transaction (one round trip less per declined answer).
        declined = await _declined_text(turn, lang, conn) if llm is None and not grounded else None
    for p in found:
        p["confidence"] = confidence(p)
    passages = [p for p in found if p["confidence"] >= USE_AT] if grounded else []
    stream_id = uuid.uuid4().hex
    first_token_ms = None
    provider = "extractive"

    if llm is False:
        turn.typing(False)
        await _say(turn, "assistant_unavailable", lang)
        if turn.ended_here:
            await _record(turn, question, "error", grounded, passages=len(passages))
        return
    offer = False
    if llm is None:
        answer = extractive_answer(question, [{**p, "score": p["confidence"]} for p in passages], USE_AT)
        text = str(answer) if answer else (declined or await _declined_text(turn, lang))
        grounded = answer is not None
        offer = answer is None
    else:
        provider = llm.provider
        messages = build_prompt(state.config.get("persona"), passages, state.history, question)
        parts: list[str] = []
        room = BOT_MESSAGE_BODY_MAX  # a model past its max_tokens: the answer ends where a bot message must
        try:
            async with contextlib.aclosing(llm.stream_chat(messages)) as stream:
                async for delta in stream:
                    if first_token_ms is None:
                        first_token_ms = int((time.monotonic() - started) * 1000)
                        metrics.BOT_SECONDS.labels("first_token").observe(first_token_ms / 1000)
                    delta = delta[:room]
                    room -= len(delta)
                    parts.append(delta)
                    turn.stream(stream_id, delta)
                    if not room or turn.lost:  # (lost: another run has the turn and answers it)
                        break
        except (LLMError, OSError) as exc:
            log.warning("LLM failed for conversation %s: %s", turn.conversation_id, exc)
            turn.typing(False)
            if turn.lost:
                return
            await _say(turn, "assistant_unavailable", lang)
            if turn.ended_here:
                await _record(turn, question, "error", grounded, provider=provider, passages=len(passages))
            return
        text = "".join(parts).strip()
        if not text:
            text, offer = await _declined_text(turn, lang), True

    meta = {
        "citations": citations_of(text, passages) if grounded else [],
        "stream_id": stream_id,
        "grounded": grounded,
        "provider": provider,
    }
    if offer or not grounded:  # a declined question (decline rule, no passage) offers a person
        meta["offer_human"] = True
    turn.typing(False)
    try:
        reply = await _store_reply(turn, text, meta)
    except asyncpg.PostgresError as exc:
        mapped = from_postgres(exc)
        if mapped is not None and mapped.code == "plan_limit":
            await _say(turn, "ai_quota", lang)
            if turn.ended_here:
                await _record(turn, question, "quota", grounded, provider=provider)
            return
        if _taken_over(exc):
            return  # a human took over while the answer was generated: stay silent
        raise
    if reply is None or not turn.ended_here:
        return  # another run of this turn answered (or is answering) it
    metrics.BOT_SECONDS.labels("answer").observe(time.monotonic() - started)
    status = await _record(
        turn,
        question,
        "answered" if grounded else "unknown",
        grounded,
        reply_id=reply.get("id"),
        provider=provider,
        passages=len(passages),
        first_token_ms=first_token_ms,
        total_ms=int((time.monotonic() - started) * 1000),
        status=not grounded,
    )
    if not grounded and status == "waiting_human":  # this miss reached handoff.miss_threshold (store_message)
        _lead_before_handoff(turn, state)
        await _handoff_notice(turn, lang)


def setup(app: web.Application) -> None:
    """This app's visitor messages to the bot are answered by `respond`."""
    visitor_hooks(app).set_bot_responder(respond)
