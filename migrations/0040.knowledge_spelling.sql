-- Misspelt question words: knowledge_query_terms (sql/51_knowledge_search.sql) reads a word no passage
-- holds as the closest word of the passages the question's vector found, within a small edit distance
-- (fuzzystrmatch's levenshtein_less_equal; a contrib extension marked trusted, shipped with every
-- PostgreSQL, as btree_gin is).
-- depends: 0038.bot_turns

CREATE EXTENSION IF NOT EXISTS fuzzystrmatch SCHEMA parley;
