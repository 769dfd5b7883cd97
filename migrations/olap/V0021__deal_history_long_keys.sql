-- The deal history's key, for long source keys.
--
-- A source key may be as long as a btree entry allows (about 2,700 bytes of
-- text that does not compress: tests/test_hostile_source.py); the primary
-- key (opportunity_id, valid_from) of V0019 leaves no room for valid_from
-- beside such a key, and the incremental run failed (54000: index row size
-- exceeds the btree maximum). As etl.stage_deleted does (V0008), the
-- uniqueness that keeps a window applied again from adding copies is on the
-- key's md5 instead, and the history step finds a deal's rows through it.
ALTER TABLE dwh.fact_deal_history DROP CONSTRAINT fact_deal_history_pkey;
CREATE UNIQUE INDEX fact_deal_history_key_idx ON dwh.fact_deal_history (md5(opportunity_id), valid_from);
COMMENT ON INDEX dwh.fact_deal_history_key_idx IS
'One row per deal (the md5 of its key: keys may be too long for a btree entry beside valid_from) and '
'valid_from.';
