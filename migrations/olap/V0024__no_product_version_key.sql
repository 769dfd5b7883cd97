-- Issue 13: dwh.product_version_key (a repeatable routine for a few commits)
-- is gone. It resolved the history step's product versions by index, a
-- second statement of dwh.product_version_lookup's rule; the history step
-- now bounds the view's join by its window's engage dates instead, as the
-- fact step does. A removed repeatable file drops nothing: this does.
DROP FUNCTION IF EXISTS dwh.product_version_key(integer, date);
