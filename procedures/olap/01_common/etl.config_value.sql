-- Function: etl.config_value(p_key text) RETURNS text
--     The value of one pipeline setting from etl.config.
-- Parameters:
--     p_key - the setting's name (e.g. 'batch_size')
-- Raises: 22023 when the setting does not exist.
-- Security: SECURITY DEFINER, runs as its owner b2b_owner; search_path pinned.
CREATE OR REPLACE FUNCTION etl.config_value(p_key text)
RETURNS text
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_value text;
BEGIN
    SELECT c.value INTO v_value FROM etl.config AS c WHERE c.key = p_key;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'etl.config has no setting %', quote_literal(p_key)
            USING ERRCODE = '22023',
                  HINT = 'See SELECT key, value, description FROM etl.config;';
    END IF;
    RETURN v_value;
END
$fn$;

COMMENT ON FUNCTION etl.config_value(text) IS
'The value of one pipeline setting from etl.config; raises 22023 for an unknown key.';
