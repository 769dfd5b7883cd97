-- Issue 12, part 5: data-quality rules a user expects flagged.
--
-- 1. A close date far in the future (beyond close_date_horizon after the
--    run's start) is loaded (the fact keeps the date the CRM holds, and
--    dim_date extends to it, within date_max) and listed as a data-quality
--    issue: such a date is almost always a typo (2097 for 2017).
-- 2. A closed deal (Won/Lost) without an account is listed (an open deal
--    without one is the normal case).
-- 3. A rare categorical value of an account (sector, office_location) close
--    to a frequent one of the same column (`technolgy` next to
--    `technology`) is listed with the value it resembles. Only distinct
--    values are compared, with the fuzzystrmatch extension's levenshtein
--    (trusted, in postgresql-contrib), created in the schema public: the
--    routines call it schema-qualified.

CREATE EXTENSION IF NOT EXISTS fuzzystrmatch WITH SCHEMA public;

INSERT INTO etl.config (key, value, description) VALUES
(
    'close_date_horizon', '1 year',
    'A close date later than this after the run''s start is loaded and listed as a data-quality issue.'
),
(
    'rare_value_max_rows', '2',
    'An account attribute value (sector, office_location) held by at most this many live accounts is rare;'
    || ' one close to a more frequent value is listed as a data-quality issue.'
),
(
    'near_value_max_distance', '2',
    'Largest edit distance (levenshtein, case-folded) at which a rare value resembles a frequent one;'
    || ' never more than a third of the rare value''s length.'
);

COMMENT ON TABLE etl.data_quality_issue IS
'Source rows loaded despite a data-quality rule they break (close before engage, Won without value, negative '
'value, an unresolved stage or a date outside the calendar pointed at Unknown, a value above max_close_value, '
'a close date beyond close_date_horizon, a closed deal without an account, a rare account attribute value '
'resembling a frequent one), one row per rule; record holds the row and, where useful, a detail naming the '
'value.';
