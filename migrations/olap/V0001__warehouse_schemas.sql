-- The warehouse's schemas and the extensions it stands on.
--   dwh  the star schema analysts read
--   etl  control tables: runs, step metadata, errors, config, staging
--   src  postgres_fdw foreign tables onto the CRM source

CREATE EXTENSION IF NOT EXISTS postgres_fdw;
CREATE EXTENSION IF NOT EXISTS btree_gist;

CREATE SCHEMA dwh;
CREATE SCHEMA etl;
CREATE SCHEMA src;

COMMENT ON SCHEMA dwh IS 'Kimball star schema of the B2B sales pipeline: dimensions, facts, aggregates.';
COMMENT ON SCHEMA etl IS 'Pipeline control: runs, step metadata, error log, config, validation, staging.';
COMMENT ON SCHEMA src IS 'Foreign tables onto the CRM source database (postgres_fdw), read by the extract steps.';

-- The source server; its options (host, port, dbname) and user mapping are
-- set from the settings at every migrate by procedures/olap/00_source/.
CREATE SERVER b2b_sales_source FOREIGN DATA WRAPPER postgres_fdw;
COMMENT ON SERVER b2b_sales_source IS 'The CRM source database (b2b_sales), configured at migrate time.';

CREATE FOREIGN TABLE src.accounts (
    account_id integer,
    account_name text,
    sector text,
    year_established integer,
    revenue numeric,
    employees integer,
    office_location text,
    parent_account_id integer
) SERVER b2b_sales_source OPTIONS (schema_name 'public', table_name 'accounts');

CREATE FOREIGN TABLE src.products (
    product_id integer,
    product_name text,
    series text,
    sales_price numeric
) SERVER b2b_sales_source OPTIONS (schema_name 'public', table_name 'products');

CREATE FOREIGN TABLE src.sales_agents (
    sales_agent_id integer,
    sales_agent_name text,
    manager_name text,
    regional_office text
) SERVER b2b_sales_source OPTIONS (schema_name 'public', table_name 'sales_agents');

CREATE FOREIGN TABLE src.sales_pipeline (
    opportunity_id text,
    sales_agent_id integer,
    product_id integer,
    account_id integer,
    deal_stage text,
    engage_date date,
    close_date date,
    close_value numeric
) SERVER b2b_sales_source OPTIONS (schema_name 'public', table_name 'sales_pipeline');

-- The source's snapshot, read in the same remote transaction as the data.
CREATE FOREIGN TABLE src.source_snapshot (
    snapshot text,
    taken_at timestamptz
) SERVER b2b_sales_source OPTIONS (schema_name 'cdc', table_name 'source_snapshot');

COMMENT ON FOREIGN TABLE src.accounts IS 'The source''s accounts, read through postgres_fdw.';
COMMENT ON FOREIGN TABLE src.products IS 'The source''s products, read through postgres_fdw.';
COMMENT ON FOREIGN TABLE src.sales_agents IS 'The source''s sales agents, read through postgres_fdw.';
COMMENT ON FOREIGN TABLE src.sales_pipeline IS 'The source''s opportunities, read through postgres_fdw.';
COMMENT ON FOREIGN TABLE src.source_snapshot IS
'pg_current_snapshot() of the source''s remote transaction: the exact state an extract read.';
