-- pgbench script: one CRM transaction that creates a new deal in Prospecting.
-- Variables (pgbench -D): nagents, nproducts, naccounts = rows in bench.agent_ids,
-- bench.product_ids, bench.account_ids (filled by bench/run.py).
\set a random(1, :nagents)
\set p random(1, :nproducts)
\set c random(1, :naccounts)
INSERT INTO public.sales_pipeline
    (opportunity_id, sales_agent_id, product_id, account_id, deal_stage, engage_date)
VALUES (
    'BENCH' || nextval('bench.new_deal_seq'),
    (SELECT id FROM bench.agent_ids WHERE n = :a),
    (SELECT id FROM bench.product_ids WHERE n = :p),
    (SELECT id FROM bench.account_ids WHERE n = :c),
    'Prospecting',
    current_date
);
