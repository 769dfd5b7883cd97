-- Trigger function: cdc.refuse_archived_key() (statement level, on INSERT and
--     UPDATE of public.sales_pipeline)
--     Keeps a deal's key in one of the CRM's two tables: a new deal (or a key
--     changed to one) that the archive already holds is refused, naming it,
--     with the way to bring the archived deal back instead. Without it the
--     CRM, which cannot see the archive, could reuse an archived key: the
--     warehouse would swap the archived deal for the new one, archiving it
--     again would collide, and deleting the new one would bring the old one
--     back. public.restore_archived_deals moves a deal back in one statement
--     (its archive row is gone when this runs, at the statement's end).
-- Raises: 23505 naming the first keys.
-- Tables: reads public.sales_pipeline_archive (new_rows joined to it; nothing
--     when the archive is empty, as after generate or import-csv).
-- Security: SECURITY DEFINER (b2b_app may not read the archive); search_path
--     pinned.
CREATE OR REPLACE FUNCTION cdc.refuse_archived_key()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    v_keys text[];
BEGIN
    IF NOT EXISTS (SELECT FROM public.sales_pipeline_archive) THEN
        RETURN NULL;
    END IF;
    v_keys := ARRAY(
        SELECT n.opportunity_id FROM new_rows AS n
         WHERE EXISTS (SELECT FROM public.sales_pipeline_archive AS a WHERE a.opportunity_id = n.opportunity_id)
         ORDER BY 1 LIMIT 10
    );
    IF cardinality(v_keys) > 0 THEN
        RAISE EXCEPTION 'sales_pipeline: opportunity_id % is archived (in public.sales_pipeline_archive)',
            array_to_string(v_keys, ', ')
            USING ERRCODE = '23505',
                  HINT = 'A DBA brings an archived deal back with CALL public.restore_archived_deals(ARRAY[...]); '
                         'a new deal needs a new key.';
    END IF;
    RETURN NULL;
END
$fn$;

COMMENT ON FUNCTION cdc.refuse_archived_key() IS
'Trigger function on INSERT and UPDATE of public.sales_pipeline: refuses a key the deals'' archive holds '
'(23505), so a deal is in one of the two tables at most.';

CREATE OR REPLACE TRIGGER refuse_archived_key_insert AFTER INSERT ON public.sales_pipeline
REFERENCING NEW TABLE AS new_rows
FOR EACH STATEMENT EXECUTE FUNCTION cdc.refuse_archived_key();
CREATE OR REPLACE TRIGGER refuse_archived_key_update AFTER UPDATE ON public.sales_pipeline
REFERENCING NEW TABLE AS new_rows
FOR EACH STATEMENT EXECUTE FUNCTION cdc.refuse_archived_key();
