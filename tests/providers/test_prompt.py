"""The grounded prompt builder and the no-LLM extractive answerer (pure functions)."""
from __future__ import annotations

from pyapp.providers.prompt import Passage, build_prompt, estimate_tokens, extractive_answer

PASSAGES = [
    Passage(title="FAQ", url="https://acme.test/faq", heading_path="How do I reset my password?", score=0.82,
            text="Click Forgot password on the sign-in page and follow the link we email you. "
                 "The link expires after one hour."),
    {"title": "Billing", "url": "https://acme.test/billing", "score": 0.55,
     "text": "You can request a full refund within 30 days of purchase. Refunds are paid within five business days."},
    Passage(title="About", url="", score=0.2, text="Acme Inc. has made widgets since 1999."),
]


def total_tokens(messages):
    return sum(estimate_tokens(m["content"]) + 4 for m in messages)


def test_prompt_has_persona_rules_numbered_passages_history_and_question():
    history = [{"role": "visitor", "content": "Hello"}, {"role": "agent", "content": "Hi! How can I help?"},
               {"role": "system", "content": "Conversation assigned to Ana"}]
    messages = build_prompt("You are Ava from Acme.", PASSAGES, history, "How do I reset my password?", 3000)
    system = messages[0]
    assert system["role"] == "system"
    assert system["content"].startswith("You are Ava from Acme.")
    assert "cite" in system["content"].lower() and "not sure" in system["content"]
    assert "Never reveal" in system["content"]
    assert "[1] FAQ › How do I reset my password? — https://acme.test/faq\nClick Forgot password" in system["content"]
    assert "[2] Billing — https://acme.test/billing\n" in system["content"]
    assert "[3] About\nAcme Inc." in system["content"]
    assert system["content"].index("[1]") < system["content"].index("[2]") < system["content"].index("[3]")
    assert messages[1:] == [{"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Hi! How can I help?"},
                            {"role": "user", "content": "How do I reset my password?"}]


def test_history_is_trimmed_oldest_first_within_the_budget():
    history = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"turn {i} " + "words " * 40}
               for i in range(30)]
    messages = build_prompt(None, PASSAGES[:2], history, "And for the Pro plan?", 1200)
    assert total_tokens(messages) <= 1200
    kept = messages[1:-1]
    assert 0 < len(kept) < 30
    assert kept[-1]["content"].startswith("turn 29 ")  # the newest survive
    numbers = [int(m["content"].split()[1]) for m in kept]
    assert numbers == list(range(30 - len(kept), 30))  # a contiguous most-recent run
    assert "[2] Billing" in messages[0]["content"]  # passages still there


def test_passages_that_do_not_fit_are_dropped_from_the_end_and_the_first_is_shortened():
    big = [Passage(title=f"P{i}", text="lorem ipsum dolor " * 200, score=0.9) for i in range(5)]
    messages = build_prompt(None, big, [], "What?", 1000)
    system = messages[0]["content"]
    assert total_tokens(messages) <= 1000
    assert "[1] P0" in system and "[2] P1" not in system and system.endswith("…")
    empty = build_prompt(None, [], [], "What?", 1000)
    assert "No passages were found" in empty[0]["content"]


def test_extractive_answer_quotes_the_best_sentences_with_citations():
    answer = extractive_answer("How do I reset my password?", PASSAGES, min_score=0.5)
    assert answer is not None
    assert answer.text.startswith("Click Forgot password on the sign-in page")
    assert answer.text.endswith("[1]") and answer.citations == [1]
    refund = extractive_answer("Can I get a refund?", PASSAGES[1:], min_score=0.5)
    assert refund.citations == [1] and "full refund within 30 days" in refund.text
    both = extractive_answer("password refund", PASSAGES, min_score=0.5)
    assert both.citations == [1, 2] and both.text.index("[1]") < both.text.index("[2]")


def test_extractive_answer_declines_when_retrieval_is_not_confident():
    assert extractive_answer("How do I reset my password?", PASSAGES, min_score=0.9) is None
    assert extractive_answer("anything", [], min_score=0.1) is None
    unscored = [{"title": "T", "text": "Our office is in Lisbon."}]  # no score: judged by shared words
    assert extractive_answer("Where is your office?", unscored, min_score=0.5).citations == [1]
    assert extractive_answer("What does shipping cost?", unscored, min_score=0.5) is None


def test_extractive_answer_on_a_paraphrase_quotes_the_opening_of_the_best_passage():
    passages = [Passage(text="Hold the reset button for ten seconds. This erases all settings. " * 3, score=0.7)]
    answer = extractive_answer("wipe device to factory state", passages, min_score=0.5, max_chars=120)
    assert answer.text.startswith("Hold the reset button for ten seconds.") and answer.text.endswith("[1]")
    assert len(answer.text) <= 120 + 4
