-- Knowledge retrieval: term statistics, full text, vectors, fusion and the decline rule.
-- Figures behind every constant here: docs/knowledge.md ("Answer quality" and "Speed"),
-- measured with bench/answer_quality.py (tuning half only) and bench/retrieval.py.

SELECT parley.apply_tenant_policies('parley.knowledge_terms');
SELECT parley.apply_tenant_policies('parley.knowledge_stats');
-- Chunk writes keep the statistics (trigger below, as the writing role); the search function
-- reads them as parley_auth.
GRANT SELECT, INSERT, UPDATE ON parley.knowledge_terms, parley.knowledge_stats TO parley_app, parley_jobs;
GRANT SELECT ON parley.knowledge_terms, parley.knowledge_stats, parley.knowledge_chunks TO parley_auth;
GRANT SELECT (tenant_id, id, config) ON parley.chatbots TO parley_auth;

-- Term statistics ------------------------------------------------------------------

-- Document frequency per chatbot and lexeme, kept exact by every write of chunks (ingest,
-- re-import, cascade deletes): one set-based delta per statement, rows locked in key order
-- so concurrent imports of one chatbot cannot deadlock on them.
CREATE OR REPLACE FUNCTION parley.knowledge_terms_delta() RETURNS trigger
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
  IF TG_OP = 'UPDATE' THEN
    -- Most updates (vectors stored, ordinals moved) leave the text alone.
    IF NOT EXISTS (SELECT 1 FROM old_rows o JOIN new_rows n ON n.tenant_id = o.tenant_id AND n.id = o.id
                    WHERE n.tsv IS DISTINCT FROM o.tsv OR n.chatbot_id <> o.chatbot_id) THEN
      RETURN NULL;
    END IF;
    INSERT INTO parley.knowledge_terms AS t (tenant_id, chatbot_id, term, chunks)
    SELECT x.tenant_id, x.chatbot_id, x.term, sum(x.d)::int
      FROM (SELECT n.tenant_id, n.chatbot_id, l.lexeme AS term, 1 AS d FROM new_rows n, unnest(n.tsv) l
            UNION ALL
            SELECT o.tenant_id, o.chatbot_id, l.lexeme, -1 FROM old_rows o, unnest(o.tsv) l) x
     GROUP BY 1, 2, 3 HAVING sum(x.d) <> 0
     ORDER BY 1, 2, 3
    ON CONFLICT (tenant_id, chatbot_id, term) DO UPDATE SET chunks = t.chunks + EXCLUDED.chunks;
  ELSIF TG_OP = 'INSERT' THEN
    INSERT INTO parley.knowledge_terms AS t (tenant_id, chatbot_id, term, chunks)
    SELECT n.tenant_id, n.chatbot_id, l.lexeme, count(*)::int FROM new_rows n, unnest(n.tsv) l
     GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
    ON CONFLICT (tenant_id, chatbot_id, term) DO UPDATE SET chunks = t.chunks + EXCLUDED.chunks;
    INSERT INTO parley.knowledge_stats AS s (tenant_id, chatbot_id, chunks)
    SELECT n.tenant_id, n.chatbot_id, count(*)::int FROM new_rows n GROUP BY 1, 2 ORDER BY 1, 2
    ON CONFLICT (tenant_id, chatbot_id) DO UPDATE SET chunks = s.chunks + EXCLUDED.chunks;
  ELSE
    INSERT INTO parley.knowledge_terms AS t (tenant_id, chatbot_id, term, chunks)
    SELECT o.tenant_id, o.chatbot_id, l.lexeme, -count(*)::int FROM old_rows o, unnest(o.tsv) l
     GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
    ON CONFLICT (tenant_id, chatbot_id, term) DO UPDATE SET chunks = t.chunks + EXCLUDED.chunks;
    INSERT INTO parley.knowledge_stats AS s (tenant_id, chatbot_id, chunks)
    SELECT o.tenant_id, o.chatbot_id, -count(*)::int FROM old_rows o GROUP BY 1, 2 ORDER BY 1, 2
    ON CONFLICT (tenant_id, chatbot_id) DO UPDATE SET chunks = s.chunks + EXCLUDED.chunks;
  END IF;
  RETURN NULL;
END $$;
COMMENT ON FUNCTION parley.knowledge_terms_delta() IS
  'Statement trigger on knowledge_chunks: applies the chunks'' lexemes to knowledge_terms (document frequency per chatbot) and their count to knowledge_stats.';

SELECT parley.ensure_trigger('parley.knowledge_chunks', 'knowledge_terms_insert', 'AFTER INSERT',
  $$REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION parley.knowledge_terms_delta()$$);
SELECT parley.ensure_trigger('parley.knowledge_chunks', 'knowledge_terms_update', 'AFTER UPDATE',
  $$REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT
    EXECUTE FUNCTION parley.knowledge_terms_delta()$$);
SELECT parley.ensure_trigger('parley.knowledge_chunks', 'knowledge_terms_delete', 'AFTER DELETE',
  $$REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION parley.knowledge_terms_delta()$$);

-- Full text ------------------------------------------------------------------------

-- Whether a word is a stop word of any language whose text-search configuration the product
-- ships (ts_config_for). Chatbots without a language use the `simple` configuration, which
-- has none: there "What are your support hours?" counted "what", "are" and "your" as three
-- of its five terms, and in a small knowledge base (where no word is common) each weighed as
-- much as "support" (demo: coverage 0.41 of the passage headed "Opening hours"; without them 1.0).
CREATE OR REPLACE FUNCTION parley.knowledge_stop_word(p_word text) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
  SELECT EXISTS (SELECT 1 FROM unnest(ARRAY['en', 'es', 'fr', 'de', 'tr']) l
                  WHERE to_tsvector(parley.ts_config_for(l), p_word) = ''::tsvector)
$$;
COMMENT ON FUNCTION parley.knowledge_stop_word(text) IS
  'True when the word is a stop word in the text-search configuration of any language ts_config_for knows (en/es/fr/de/tr); knowledge_query_terms drops such words from questions to a chatbot on the simple configuration.';

-- Edit distance counting two neighbouring letters swapped as one slip, as people type them
-- ("stirng"; Levenshtein counts two). A loop over the letters: knowledge_spelling_distance calls
-- it only on pairs that Levenshtein (fuzzystrmatch, in C) already found near, a few per question.
CREATE OR REPLACE FUNCTION parley.knowledge_swap_distance(p_a text, p_b text) RETURNS int
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE STRICT
AS $$
DECLARE
  a text[] := regexp_split_to_array(p_a, '');
  b text[] := regexp_split_to_array(p_b, '');
  m int := cardinality(a);
  n int := cardinality(b);
  d int[];  -- (m + 1) x (n + 1), row-major from 0
  cost int;
BEGIN
  IF m = 0 OR n = 0 THEN
    RETURN greatest(m, n);
  END IF;
  d := array_fill(0, ARRAY[(m + 1) * (n + 1)]);
  FOR i IN 0..m LOOP d[i * (n + 1) + 1] := i; END LOOP;
  FOR j IN 0..n LOOP d[j + 1] := j; END LOOP;
  FOR i IN 1..m LOOP
    FOR j IN 1..n LOOP
      cost := CASE WHEN a[i] = b[j] THEN 0 ELSE 1 END;
      d[i * (n + 1) + j + 1] := least(d[(i - 1) * (n + 1) + j + 1] + 1, d[i * (n + 1) + j] + 1,
                                      d[(i - 1) * (n + 1) + j] + cost);
      IF i > 1 AND j > 1 AND a[i] = b[j - 1] AND a[i - 1] = b[j] THEN
        d[i * (n + 1) + j + 1] := least(d[i * (n + 1) + j + 1], d[(i - 2) * (n + 1) + j - 1] + 1);
      END IF;
    END LOOP;
  END LOOP;
  RETURN d[(m + 1) * (n + 1)];
END $$;
COMMENT ON FUNCTION parley.knowledge_swap_distance(text, text) IS
  'Edit distance between two words counting an insertion, a deletion, a replacement or two neighbouring letters swapped as one edit (optimal string alignment); called by knowledge_spelling_distance on pairs already near by Levenshtein.';

-- How many slips a question's word of this length may hold and still be read as a word of the
-- knowledge: none under 5 letters (too many short words are one letter apart), then 1, from 8
-- letters 2.
CREATE OR REPLACE FUNCTION parley.knowledge_spelling_budget(p_length int) RETURNS int
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT CASE WHEN p_length >= 8 THEN 2 WHEN p_length >= 5 THEN 1 ELSE 0 END $$;
COMMENT ON FUNCTION parley.knowledge_spelling_budget(int) IS
  'Edits (knowledge_swap_distance) a misspelt question word of p_length letters may be from the word it is read as (docs/knowledge.md).';

-- How far a question's word is from a word of the knowledge when it may be read as it (a
-- misspelling): the edit distance when within the asked word's budget, else NULL. A word that is
-- two question words run together is tried separately (knowledge_query_terms). A word of over 64
-- letters is no misspelling of anything (a pasted sequence, a run of letters): never read, and
-- never handed to Levenshtein, which raises an error past 255 characters.
CREATE OR REPLACE FUNCTION parley.knowledge_spelling_distance(p_asked text, p_known text) RETURNS int
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
  -- One expression, so the planner inlines it: the cheap tests (lengths, then Levenshtein in C, within
  -- twice the budget as a swap counts two there) leave few pairs to the swap-aware distance. Nested
  -- CASEs, so each test runs only after the one before it passed (AND promises no order).
  SELECT CASE WHEN length(p_asked) <= 64
               AND abs(length(p_asked) - length(p_known)) <= parley.knowledge_spelling_budget(length(p_asked))
              THEN CASE WHEN parley.levenshtein_less_equal(p_asked, p_known, 2 * parley.knowledge_spelling_budget(length(p_asked)))
                             <= 2 * parley.knowledge_spelling_budget(length(p_asked))
                        THEN nullif(least(parley.knowledge_swap_distance(p_asked, p_known),
                                          parley.knowledge_spelling_budget(length(p_asked)) + 1),
                                    parley.knowledge_spelling_budget(length(p_asked)) + 1) END END
$$;
COMMENT ON FUNCTION parley.knowledge_spelling_distance(text, text) IS
  'Edit distance (a swap of neighbouring letters counting one) between a question''s word and a word of the knowledge when within the asked word''s knowledge_spelling_budget, else NULL (always for a word of over 64 letters); used by knowledge_query_terms to read a misspelt word.';

-- How many of the vector list's best passages lend their words to misspelt question words.
CREATE OR REPLACE FUNCTION parley.knowledge_spelling_neighbours() RETURNS int
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT 20 $$;
COMMENT ON FUNCTION parley.knowledge_spelling_neighbours() IS
  'Passages of the vector list (best first) whose words a question word no passage holds may be read as (knowledge_query_terms; docs/knowledge.md).';

-- The question's terms: lexemes of its words in the chatbot's configuration, so plain words
-- are never operators ("or", "-x", quotes and "!" mean nothing), each with its document
-- frequency and BM25 weight ln(1 + (N - df + 0.5) / (df + 0.5)) over the chatbot's chunks.
-- A term no chunk contains (often a misspelling or a filler word) weighs like one that two chunks
-- contain. N is at least
-- 1,000: a small knowledge base is weighed as if it sat in a larger one, so a word in both of
-- its two passages still counts (there the score tends to the plain share of terms).
-- Misspellings: given the best passages of the question's vector (p_near), a term no chunk
-- contains is read as a word of those passages that it is a misspelling of
-- (knowledge_spelling_distance), or that it makes with another of the question's words run
-- together ("eigen values" -> eigenvalu); nearest first, then the better passage's, then the
-- commonest. Only the passages the question's meaning found lend words, so an outside word
-- ("julia", "mathematica") is not bent to some near word of the knowledge ("julian", "mathemat")
-- that the question is not about, and only this chatbot's passages (the caller's tenant, RLS) are
-- read. Under 10 x knowledge_spelling_neighbours() passages nothing is read: there the best
-- passages are much of the knowledge, and a word near one of theirs says nothing ("getting" and
-- "setting"). `asked` is the question's own term.
DROP FUNCTION IF EXISTS parley.knowledge_query_terms(uuid, regconfig, text);
CREATE OR REPLACE FUNCTION parley.knowledge_query_terms(p_chatbot_id uuid, p_config regconfig, p_query text,
                                                        p_near bigint[] DEFAULT NULL)
RETURNS TABLE (term text, df int, idf real, asked text)
LANGUAGE sql STABLE
AS $$
  WITH n AS (SELECT coalesce((SELECT s.chunks FROM parley.knowledge_stats s
                               WHERE s.tenant_id = (SELECT parley.current_tenant_id())
                                 AND s.chatbot_id = p_chatbot_id), 0) AS n),
  q AS (SELECT DISTINCT l AS term FROM unnest(tsvector_to_array(to_tsvector(p_config, left(coalesce(p_query, ''), 2000)))) l
         WHERE p_config <> 'simple'::regconfig OR NOT parley.knowledge_stop_word(l)),
  known AS (SELECT q.term, coalesce(t.chunks, 0) AS df FROM q
              LEFT JOIN parley.knowledge_terms t
                ON t.tenant_id = (SELECT parley.current_tenant_id()) AND t.chatbot_id = p_chatbot_id AND t.term = q.term),
  -- Only for terms no chunk holds: the question's words as written (runs of letters, lower case) that
  -- give them, and the words of the passages the question's vector found best.
  words AS (SELECT DISTINCT w FROM regexp_split_to_table(lower(left(coalesce(p_query, ''), 2000)), '[^[:alpha:]]+') w
             WHERE w <> '' AND EXISTS (SELECT 1 FROM known WHERE known.df = 0)),
  -- At most the 5 longest: each is compared with every word of the passages, and a question of
  -- 2,000 characters of made-up words held the search for 2.7 s when all were.
  unknown AS (SELECT k.term, w.w FROM words w
                CROSS JOIN LATERAL unnest(tsvector_to_array(to_tsvector(p_config, w.w))) l
                JOIN known k ON k.term = l
               WHERE k.df = 0
               ORDER BY length(w.w) DESC, w.w LIMIT 5),
  -- The words of the passages' title, heading path and text, each cut to a length no passage of the
  -- chunker reaches (text: 1,000 characters; a title or heading path of a few words): a document's
  -- title or heading is repeated on each of its passages uncut, so a page with a heading of 20,000
  -- words (160 KB) made every question with an unknown word split and compare 3 MB (300 ms; an upload
  -- of 10 MB, seconds).
  near AS (SELECT r, min(array_position(p_near, c.id)) AS place
             FROM parley.knowledge_chunks c,
                  regexp_split_to_table(lower(concat_ws(' ', left(c.title, 300), left(c.heading_path, 600),
                                                        left(c.text, 3000))), '[^[:alpha:]]+') r
            WHERE EXISTS (SELECT 1 FROM unknown)
              AND (SELECT n.n FROM n) >= 10 * parley.knowledge_spelling_neighbours()
              AND c.tenant_id = (SELECT parley.current_tenant_id()) AND c.chatbot_id = p_chatbot_id
              AND c.id = ANY (p_near[1:parley.knowledge_spelling_neighbours()])
              AND r <> ''
            GROUP BY r),
  -- The words within reach of each unknown term (misspelt, or two of the question's words run together).
  reach AS MATERIALIZED (
    SELECT u.term AS asked, x.r, x.place, x.d FROM unknown u
     CROSS JOIN LATERAL (SELECT nr.r, nr.place, parley.knowledge_spelling_distance(u.w, nr.r) AS d FROM near nr
                         UNION ALL
                         SELECT nr.r, nr.place, 0 FROM words o JOIN near nr ON nr.r = u.w || o.w WHERE o.w <> u.w
                         UNION ALL
                         SELECT nr.r, nr.place, 0 FROM words o JOIN near nr ON nr.r = o.w || u.w WHERE o.w <> u.w) x
     WHERE x.d IS NOT NULL),
  -- Each unknown term's reading: the lexeme of the nearest such word, then of the best passage, then
  -- the commonest.
  fix AS (SELECT DISTINCT ON (y.asked) y.asked, y.term, y.chunks
            FROM (SELECT x.asked, x.d, x.place, l AS term,
                         (SELECT t.chunks FROM parley.knowledge_terms t  -- a lookup by key per candidate
                           WHERE t.tenant_id = (SELECT parley.current_tenant_id()) AND t.chatbot_id = p_chatbot_id
                             AND t.term = l) AS chunks
                    FROM reach x CROSS JOIN LATERAL unnest(tsvector_to_array(to_tsvector(p_config, x.r))) l) y
           WHERE y.chunks > 0
           ORDER BY y.asked, y.d, y.place, y.chunks DESC, y.term),
  read AS (SELECT k.term AS asked, coalesce(f.term, k.term) AS term, coalesce(f.chunks, k.df) AS df
             FROM known k LEFT JOIN fix f ON f.asked = k.term)
  SELECT r.term, r.df,
         ln(1 + (greatest(n.n, 1000) - coalesce(nullif(r.df, 0), 2) + 0.5) / (coalesce(nullif(r.df, 0), 2) + 0.5))::real,
         min(r.asked)
    FROM read r CROSS JOIN n
   GROUP BY r.term, r.df, n.n
$$;
COMMENT ON FUNCTION parley.knowledge_query_terms(uuid, regconfig, text, bigint[]) IS
  'The lexemes of a question in a chatbot''s text-search configuration with their document frequency and BM25 idf over the chatbot''s chunks (current tenant); a lexeme no chunk holds is read as a near word (knowledge_spelling_distance) or a run-together pair of the question''s words found in the passages p_near (the vector list, best first); asked: the question''s own lexeme.';

-- How many index postings the candidate step may read: the informative terms are taken from
-- the rarest while their chunk counts add up to at most this (the rarest always). Every
-- question term still counts in the candidates' scores.
CREATE OR REPLACE FUNCTION parley.knowledge_fts_budget() RETURNS int
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT 1000 $$;
COMMENT ON FUNCTION parley.knowledge_fts_budget() IS
  'Postings (chunks) the full-text candidate step of knowledge_fts may read, rarest terms first; see docs/knowledge.md.';

-- Full-text candidates of one chatbot, best first. SECURITY DEFINER (owned by parley_auth,
-- which bypasses RLS) so the (chatbot_id, tsv) GIN index is usable: under RLS `@@` is not
-- leakproof and the planner would filter every row of the chatbot instead (PITFALLS). The
-- tenant is filtered explicitly, from the caller's own context; a chatbot of another tenant
-- finds nothing.
-- Score: the idf-weighted share of the question's terms a chunk contains, title and heading
-- matches counting extra (field weights), in 0..1. Candidates are the chunks holding an
-- informative term (in at most a quarter of the chunks, else the rarest one); every term
-- counts in their score; the best 200 by it get the title/heading weight.
CREATE OR REPLACE FUNCTION parley.knowledge_fts(p_chatbot_id uuid, p_terms text[], p_idf real[], p_df int[],
                                                p_pool int)
RETURNS TABLE (chunk_id bigint, score real, coverage real)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = ''
AS $$
DECLARE
  v_tenant uuid := parley.current_tenant_id();
  v_total real;
  v_n int;
  v_q tsquery;
  v_body text;
  v_head text;
BEGIN
  IF v_tenant IS NULL OR cardinality(p_terms) = 0 THEN
    RETURN;
  END IF;
  SELECT sum(i) INTO v_total FROM unnest(p_idf) i;
  SELECT s.chunks INTO v_n FROM parley.knowledge_stats s WHERE s.tenant_id = v_tenant AND s.chatbot_id = p_chatbot_id;
  IF coalesce(v_n, 0) = 0 OR coalesce(v_total, 0) <= 0 THEN
    RETURN;
  END IF;
  -- One OR query of the informative terms (in at most a quarter of the chunks, else the rarest
  -- one), run as dynamic SQL so its plan is made for this query: the planner sees the actual
  -- terms and takes the GIN index when they are selective (a cached generic plan filtered
  -- every row of the chatbot instead: 86 ms at 20,000 passages).
  SELECT to_tsquery('simple', string_agg(quote_literal(g.term), ' | '))
    INTO v_q
    FROM (SELECT u.term, u.df, row_number() OVER (ORDER BY u.df = 0, u.df, u.term) AS rarity,
                 sum(u.df) OVER (ORDER BY u.df = 0, u.df, u.term) AS postings
            FROM unnest(p_terms, p_df) AS u(term, df)) g
   WHERE g.df > 0 AND ((g.df * 4 <= v_n AND g.postings <= parley.knowledge_fts_budget()) OR g.rarity = 1);
  IF v_q IS NULL THEN
    RETURN;
  END IF;
  -- Each term's weight as a plain expression (no subquery per row); terms and weights enter
  -- the text only through format's %L and a real.
  SELECT string_agg(format('CASE WHEN c.tsv @@ %L::tsquery THEN %s ELSE 0 END', quote_literal(u.term), u.idf), ' + '),
         string_agg(format('CASE WHEN b.tsv @@ %L::tsquery THEN %s ELSE 0 END', quote_literal(u.term) || ':AB', u.idf),
                    ' + ')
    INTO v_body, v_head
    FROM unnest(p_terms, p_idf) AS u(term, idf);
  RETURN QUERY EXECUTE format(
    'SELECT b.id, ((b.body + 0.5 * (%s)) / (1.5 * $4))::real, (b.body / $4)::real
       FROM (SELECT c.id, c.tsv, (%s)::real AS body FROM parley.knowledge_chunks c
              WHERE c.chatbot_id = $1 AND c.tsv @@ $2 AND c.tenant_id = $3
              ORDER BY 3 DESC, c.id LIMIT 200) b
      ORDER BY 2 DESC, b.id LIMIT $5', v_head, v_body)
    USING p_chatbot_id, v_q, v_tenant, v_total, p_pool;
END $$;
COMMENT ON FUNCTION parley.knowledge_fts(uuid, text[], real[], int[], int) IS
  'Full-text candidates of a chatbot of the caller''s tenant (explicit filter; definer so the GIN index serves it): score = idf-weighted term share with title/heading matches weighing 1.5x, coverage = idf-weighted share of the question''s terms present. Called by knowledge_search.';
ALTER FUNCTION parley.knowledge_fts(uuid, text[], real[], int[], int) OWNER TO parley_auth;
REVOKE ALL ON FUNCTION parley.knowledge_fts(uuid, text[], real[], int[], int) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION parley.knowledge_fts(uuid, text[], real[], int[], int) TO parley_app, parley_jobs;

-- Hybrid retrieval -----------------------------------------------------------------

-- Chatbots with at most this many chunks are searched exactly (btree on the chatbot, then a
-- sort by distance); larger ones use HNSW with iterative scans.
CREATE OR REPLACE FUNCTION parley.exact_knn_limit() RETURNS int
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT 3000 $$;
COMMENT ON FUNCTION parley.exact_knn_limit() IS
  'Chunks per chatbot up to which knowledge_search uses exact kNN instead of the HNSW index.';

-- Reciprocal-rank fusion: score = w_fts / (k + rank in full text) + w_vec / (k + rank in vectors).
CREATE OR REPLACE FUNCTION parley.knowledge_fusion(OUT k int, OUT w_fts real, OUT w_vec real)
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT 60, 1.0::real, 2.0::real $$;
COMMENT ON FUNCTION parley.knowledge_fusion() IS
  'The fusion constants of knowledge_search (RRF k and the weights of the full-text and vector lists), tuned on the tuning half of bench/answer_quality.py.';

-- How many passages of one document the top k holds before any document's next passage: the
-- best passage of each document first (by fused score), then the others. A long page matched by
-- several of its passages filled the top five with itself (tuning halves, one passage per
-- document against none: hit@5 .863 -> .890 on the PostgreSQL docs, .964 -> .988 on the Python
-- docs); the top k is still filled from the same document when fewer documents match.
CREATE OR REPLACE FUNCTION parley.knowledge_per_document() RETURNS int
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT 1 $$;
COMMENT ON FUNCTION parley.knowledge_per_document() IS
  'Passages of one document knowledge_search puts in its top k before the next passages of any document (docs/knowledge.md).';

-- The decline rule: whether the best passages answer the question at all. Inputs: the best
-- cosine similarity of the vector list (NULL without vectors), the idf-weighted coverage of
-- the question's terms by the best full-text passage, the share of the question's term
-- weight the chatbot's knowledge contains anywhere, whether both lists agree on the top
-- document, and the size of the knowledge (passages, documents). Constants calibrated on the
-- tuning halves of the evaluations (docs/knowledge.md).
--
-- Size: the best cosine is the largest of N similarities, so an unrelated question's best
-- cosine grows with N (the largest of N normal draws sits near sigma * sqrt(2 ln N) above
-- their mean). The cosine thresholds were set on the 19,407-passage docs site; a smaller
-- knowledge base lowers them by knowledge_size_shift(N) (0 at 20,000 passages). Agreement of
-- the two lists is evidence only when it is unlikely by chance: with D documents the vector
-- list's top document lands among the full text's top five with chance about 5 / D, so it
-- counts from knowledge_agree_documents() documents on (the demo's one document always "agrees").
CREATE OR REPLACE FUNCTION parley.knowledge_size_shift(p_chunks int) RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT 0.135 * (sqrt(2 * ln(20000)) - sqrt(2 * ln(greatest(coalesce(p_chunks, 20000), 2)))) $$;
COMMENT ON FUNCTION parley.knowledge_size_shift(int) IS
  'How much lower the decline rule''s cosine thresholds sit for a knowledge base of p_chunks passages than at 20,000 (sigma * (sqrt(2 ln 20000) - sqrt(2 ln N)), sigma calibrated on the small corpora''s tuning halves).';

CREATE OR REPLACE FUNCTION parley.knowledge_agree_documents() RETURNS int
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT 50 $$;
COMMENT ON FUNCTION parley.knowledge_agree_documents() IS
  'Documents a chatbot needs before the agreement of its full-text and vector lists counts in the decline rule (chance agreement about 5 / documents).';

-- Vectors take part once a fifth of the chatbot's passages have theirs. While a large import waits
-- in the embedding queue, a question's nearest vectors are those of the few passages embedded so
-- far: they pushed the full-text candidates out of the fusion and made the decline rule refuse
-- answerable questions. PostgreSQL docs (14,752 passages), hit@5 / wrongly declined, tuning half:
-- full text alone .781 / .041; hybrid with 10 % embedded .753 / .096, 20 % .808 / .055, 50 %
-- .904 / .041. Held-out half: full text .795 / .027; hybrid 5 % .644 / .164, 10 % .767 / .082,
-- 20 % .836 / .041, 50 % .890 / .041, all .904 / .041. The queue is empty once an import is
-- embedded, so the look costs nothing then; meanwhile it counts at most 80 % of the passages.
CREATE OR REPLACE FUNCTION parley.knowledge_vectors_ready(p_chatbot_id uuid, p_chunks int) RETURNS boolean
LANGUAGE sql STABLE
AS $$
  SELECT (SELECT count(*) FROM (SELECT 1 FROM parley.embedding_jobs j
                                  JOIN parley.knowledge_chunks c ON c.tenant_id = j.tenant_id AND c.id = j.chunk_id
                                 WHERE j.tenant_id = (SELECT parley.current_tenant_id()) AND c.chatbot_id = p_chatbot_id
                                 LIMIT floor(0.8 * greatest(coalesce(p_chunks, 0), 0))::int + 1) waiting)
         <= 0.8 * greatest(coalesce(p_chunks, 0), 0)
$$;
COMMENT ON FUNCTION parley.knowledge_vectors_ready(uuid, int) IS
  'Whether the chatbot''s vectors take part in knowledge_search: at most 80 % of its p_chunks passages wait in the embedding queue (current tenant). Before that, a question is answered from full text alone.';

CREATE OR REPLACE FUNCTION parley.knowledge_uses_vectors(p_chatbot_id uuid) RETURNS boolean
LANGUAGE sql STABLE
AS $$
  SELECT EXISTS (SELECT 1 FROM parley.knowledge_chunks c
                  WHERE c.tenant_id = (SELECT parley.current_tenant_id()) AND c.chatbot_id = p_chatbot_id
                    AND c.embedding IS NOT NULL)
     AND parley.knowledge_vectors_ready(p_chatbot_id, (SELECT s.chunks FROM parley.knowledge_stats s
                                                       WHERE s.tenant_id = (SELECT parley.current_tenant_id())
                                                         AND s.chatbot_id = p_chatbot_id))
$$;
COMMENT ON FUNCTION parley.knowledge_uses_vectors(uuid) IS
  'Whether a question to this chatbot (current tenant) is worth embedding: some of its passages have vectors and knowledge_vectors_ready says they take part. The server embeds the question only then (no model call, no latency otherwise); knowledge_search applies the same rule to whatever vector it is given.';

DROP FUNCTION IF EXISTS parley.knowledge_answerable(double precision, real, real, boolean);
CREATE OR REPLACE FUNCTION parley.knowledge_answerable(p_cosine double precision, p_coverage real, p_known real,
                                                       p_agree boolean, p_chunks int, p_documents int)
RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
  SELECT CASE
    WHEN p_cosine IS NULL THEN coalesce(p_coverage, 0) >= 0.4999
    ELSE p_cosine >= 0.63 - s.shift
         OR (p_cosine >= 0.39 - s.shift AND coalesce(p_coverage, 0) >= 0.55)
         OR (p_agree AND coalesce(p_documents, 0) >= parley.knowledge_agree_documents() AND p_cosine >= 0.53 - s.shift)
  END
    FROM (SELECT parley.knowledge_size_shift(p_chunks) AS shift) s
$$;
COMMENT ON FUNCTION parley.knowledge_answerable(double precision, real, real, boolean, int, int) IS
  'Decline rule: true when the retrieved passages can answer (best cosine, idf-weighted term coverage of the best full-text passage, share of the question''s term weight the knowledge knows, agreement of the two lists on the top document; cosine thresholds lowered for small knowledge bases by knowledge_size_shift, agreement counted from knowledge_agree_documents documents). Calibrated on the tuning halves of bench/answer_quality.py.';

DROP FUNCTION IF EXISTS parley.knowledge_search(uuid, text, int, vector, text);
CREATE FUNCTION parley.knowledge_search(
  p_chatbot_id uuid, p_query text, p_k int, p_query_embedding vector DEFAULT NULL, p_model text DEFAULT NULL)
RETURNS TABLE (chunk_id bigint, document_id uuid, title text, url text, heading_path text, text text,
               fts_rank real, fts_coverage real, vector_distance double precision, score double precision,
               answerable boolean, signals jsonb)
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
  v_tenant uuid := parley.current_tenant_id();
  v_config regconfig := parley.chatbot_ts_config(p_chatbot_id);
  v_k int := least(greatest(coalesce(p_k, 5), 1), 50);
  v_pool int := greatest(v_k * 4, 20);
  v_terms text[];
  v_idf real[];
  v_df int[];
  v_known real;
  v_fts bigint[] := '{}';
  v_fts_rank real[] := '{}';
  v_fts_cov real[] := '{}';
  v_vec bigint[] := '{}';
  v_vec_dist double precision[] := '{}';
  v_chunks int;
  v_documents int;
  v_agree boolean := false;
  v_answerable boolean;
  v_read jsonb;
BEGIN
  IF v_tenant IS NULL OR v_config IS NULL THEN
    RETURN;  -- no tenant, or the chatbot is not this tenant's: nothing to find
  END IF;

  -- Vectors: exact for small chatbots, HNSW with iterative scan (pgvector 0.8) for big ones.
  SELECT s.chunks INTO v_chunks FROM parley.knowledge_stats s
   WHERE s.tenant_id = v_tenant AND s.chatbot_id = p_chatbot_id;
  -- Too few passages embedded yet (an import's first minutes): full text alone (knowledge_vectors_ready).
  IF p_query_embedding IS NOT NULL AND NOT parley.knowledge_vectors_ready(p_chatbot_id, v_chunks) THEN
    p_query_embedding := NULL;
  END IF;
  IF p_query_embedding IS NOT NULL THEN
    IF coalesce(v_chunks, 0) <= parley.exact_knn_limit() THEN
      SELECT array_agg(v.id ORDER BY v.d, v.id), array_agg(v.d ORDER BY v.d, v.id)
        INTO v_vec, v_vec_dist
        FROM (SELECT c.id, (c.embedding <=> p_query_embedding) + 0 AS d
                FROM parley.knowledge_chunks c
               WHERE c.tenant_id = v_tenant AND c.chatbot_id = p_chatbot_id AND c.embedding IS NOT NULL
                 AND (p_model IS NULL OR c.embedding_model = p_model)
               ORDER BY 2, c.id
               LIMIT v_pool) v;
    ELSE
      PERFORM set_config('hnsw.iterative_scan', 'relaxed_order', true);
      PERFORM set_config('hnsw.ef_search', greatest(v_pool * 2, 40)::text, true);
      -- Dynamic SQL: always a custom plan. A cached generic plan (plpgsql switches after five
      -- calls) may sort the chatbot's rows by distance instead of walking the index (measured:
      -- 280 ms instead of 2 ms at 20,000 passages).
      EXECUTE 'SELECT array_agg(v.id ORDER BY v.d, v.id), array_agg(v.d ORDER BY v.d, v.id)
                 FROM (SELECT c.id, c.embedding <=> $1 AS d
                         FROM parley.knowledge_chunks c
                        WHERE c.tenant_id = $2 AND c.chatbot_id = $3 AND ($4::text IS NULL OR c.embedding_model = $4)
                        ORDER BY c.embedding <=> $1
                        LIMIT $5) v'
        INTO v_vec, v_vec_dist USING p_query_embedding, v_tenant, p_chatbot_id, p_model, v_pool;
    END IF;
  END IF;

  -- The question's terms, a misspelt word read as a word of the best vector passages.
  SELECT array_agg(q.term ORDER BY q.term), array_agg(q.idf ORDER BY q.term), array_agg(q.df ORDER BY q.term),
         (sum(q.idf) FILTER (WHERE q.df > 0) / nullif(sum(q.idf), 0))::real,
         jsonb_object_agg(q.asked, q.term) FILTER (WHERE q.asked <> q.term)
    INTO v_terms, v_idf, v_df, v_known, v_read
    FROM parley.knowledge_query_terms(p_chatbot_id, v_config, p_query, v_vec) q;
  IF v_terms IS NOT NULL THEN
    SELECT array_agg(f.chunk_id ORDER BY f.score DESC, f.chunk_id), array_agg(f.score ORDER BY f.score DESC, f.chunk_id),
           array_agg(f.coverage ORDER BY f.score DESC, f.chunk_id)
      INTO v_fts, v_fts_rank, v_fts_cov
      FROM parley.knowledge_fts(p_chatbot_id, v_terms, v_idf, v_df, v_pool) f;
  END IF;

  IF p_query_embedding IS NOT NULL THEN
    -- Agreement: the best vector passage's document is among the best full-text ones.
    SELECT EXISTS (SELECT 1 FROM parley.knowledge_chunks a JOIN parley.knowledge_chunks b
                     ON b.tenant_id = a.tenant_id AND b.document_id = a.document_id
                    WHERE a.tenant_id = v_tenant AND a.id = v_vec[1] AND b.id = ANY (v_fts[1:5]))
      INTO v_agree;
    IF v_agree THEN  -- how much agreement says depends on how many documents there are
      SELECT count(*) INTO v_documents FROM parley.knowledge_documents d
       WHERE d.tenant_id = v_tenant AND d.chatbot_id = p_chatbot_id;
    END IF;
  END IF;

  v_answerable := parley.knowledge_answerable(1 - v_vec_dist[1], v_fts_cov[1], v_known, v_agree, v_chunks,
                                              v_documents);

  -- Reciprocal-rank fusion (knowledge_fusion).
  RETURN QUERY
  -- With vectors, full-text candidates enter the fusion only if they hold more than a third
  -- of the question's term weight: one shared common word is noise the vector list ranks
  -- better (help-centre corpus: hit@3 0.929 without the filter, 0.976 with it).
  WITH w AS (SELECT * FROM parley.knowledge_fusion()),
       f AS (SELECT u.id, u.r, u.cov, row_number() OVER (ORDER BY u.n) AS n
               FROM unnest(v_fts, v_fts_rank, v_fts_cov) WITH ORDINALITY AS u(id, r, cov, n)
              WHERE p_query_embedding IS NULL OR u.cov * 3 > 1),
       v AS (SELECT u.id, u.d, u.n FROM unnest(v_vec, v_vec_dist) WITH ORDINALITY AS u(id, d, n)),
       fused AS (
         SELECT coalesce(f.id, v.id) AS id, f.r, f.cov, v.d,
                coalesce(w.w_fts / (w.k + f.n), 0) + coalesce(w.w_vec / (w.k + v.n), 0) AS s
           FROM f FULL JOIN v ON v.id = f.id CROSS JOIN w),
       -- The candidates' documents in one index scan by key (a lookup per candidate of the full
       -- join's coalesced id was planned as a scan of the tenant's chunks each: 0.5-1.5 s).
       docs AS MATERIALIZED (SELECT k.id, k.document_id FROM parley.knowledge_chunks k
                              WHERE k.tenant_id = v_tenant AND k.id = ANY (v_fts || v_vec)),
       -- Each candidate's place among its document's candidates (knowledge_per_document).
       placed AS (SELECT fused.*, row_number() OVER (PARTITION BY docs.document_id ORDER BY fused.s DESC,
                                                     fused.d NULLS LAST, fused.r DESC NULLS LAST, fused.id)
                           > parley.knowledge_per_document() AS later
                    FROM fused JOIN docs ON docs.id = fused.id),
       best AS (SELECT * FROM placed ORDER BY placed.later, placed.s DESC, placed.d NULLS LAST, placed.r DESC NULLS LAST,
                                              placed.id
                 LIMIT v_k)
  -- The passages of the best k only, each by its key (LATERAL ... OFFSET 0: a plain join was
  -- planned as a hash join over every chunk of the tenant, 20,000 rows for a docs site).
  SELECT c.id, c.document_id, c.title, c.url, c.heading_path, c.text, best.r, best.cov,
         best.d, best.s::double precision, v_answerable,
         jsonb_build_object('cosine', round((1 - v_vec_dist[1])::numeric, 4), 'coverage', round(v_fts_cov[1]::numeric, 4),
                            'known', round(v_known::numeric, 4), 'agree', v_agree, 'chunks', v_chunks,
                            'documents', v_documents, 'read', v_read)
    FROM best
    CROSS JOIN LATERAL (SELECT k.id, k.document_id, k.title, k.url, k.heading_path, k.text
                          FROM parley.knowledge_chunks k WHERE k.tenant_id = v_tenant AND k.id = best.id OFFSET 0) c
   ORDER BY best.later, best.s DESC, best.d NULLS LAST, best.r DESC NULLS LAST, c.id;
END $$;
COMMENT ON FUNCTION parley.knowledge_search(uuid, text, int, vector, text) IS
  'Hybrid retrieval for one chatbot of the current tenant: full text (knowledge_fts: plain-word terms, idf and field weights, normalised 0..1) and vector kNN (exact for small chatbots, HNSW iterative scan otherwise) fused by reciprocal rank (knowledge_fusion), the best passage of each document before the next passages of any (knowledge_per_document). FTS-only without a query embedding, or while most passages wait for theirs (knowledge_vectors_ready). A question word no passage holds is read as a near word of the best vector passages (knowledge_query_terms), listed in signals.read. fts_coverage: idf-weighted share of the question''s terms a passage contains; answerable: the decline rule (knowledge_answerable) for the question and signals: its inputs, the same on every row.';
