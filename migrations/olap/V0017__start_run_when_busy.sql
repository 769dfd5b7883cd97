-- Issue 12, part 1: the DAGs on a fresh install, in any order.
--
-- etl.start_run and etl.open_run take p_when_busy ('refuse', the default and
-- the old behaviour; 'skip'; 'wait'): the DAG dwh_incremental_update starts
-- its run with 'skip' (no run, and a no-op branch, before any initial load
-- or while another run is going), dwh_initial_load with 'wait' after its
-- sensor etl.pipeline_idle. A new parameter makes a new routine, so the old
-- signatures go here; procedures/olap/10_start creates the new ones right
-- after the versioned migrations.

DROP PROCEDURE IF EXISTS etl.start_run(text, integer, bigint, boolean);
DROP FUNCTION IF EXISTS etl.open_run(text, integer, boolean);
