-- pgbench script: one CRM transaction that moves a random deal to a random stage.
-- Variables (pgbench -D): ndeals = rows in bench.deal_ids (filled by bench/run.py).
\set n random(1, :ndeals)
\set s random(1, 4)
UPDATE public.sales_pipeline
   SET deal_stage = (ARRAY['Prospecting', 'Engaging', 'Won', 'Lost'])[:s]
 WHERE opportunity_id = (SELECT opportunity_id FROM bench.deal_ids WHERE n = :n);
