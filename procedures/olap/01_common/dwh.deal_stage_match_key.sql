-- Function: dwh.deal_stage_match_key(p_name text) RETURNS text
--     The key deal stage names are compared by, as the CSV importer compares
--     names (b2bdwh.import_csv.normalise): Unicode NFKC, case folded, only
--     letters and digits kept. 'won', ' Won ', 'WON' all give 'won'. NULL
--     for NULL.
--     A plain immutable SQL expression, so the planner inlines it into the
--     query that calls it (which is why it pins no search_path: every name
--     in it is schema-qualified).
CREATE OR REPLACE FUNCTION dwh.deal_stage_match_key(p_name text)
RETURNS text
LANGUAGE sql
IMMUTABLE
PARALLEL SAFE
AS $fn$
    SELECT pg_catalog.regexp_replace(
        pg_catalog.lower(pg_catalog.normalize(p_name, 'NFKC')), '[^[:alnum:]]+', '', 'g'
    );
$fn$;

COMMENT ON FUNCTION dwh.deal_stage_match_key(text) IS
'The key deal stage names resolve by: NFKC, lower case, letters and digits only (as the CSV importer '
'compares names); immutable and inlined by the planner.';
