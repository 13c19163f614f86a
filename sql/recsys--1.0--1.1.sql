-- recsys 1.0 -> 1.1: ALTER EXTENSION recsys UPDATE TO '1.1'.
\echo Use "ALTER EXTENSION recsys UPDATE TO '1.1'" to load this file. \quit

-- Every change to the SQL surface made in recsys--1.1.sql is made here too,
-- one section per change, in the order of the install script.  The upgrade
-- test (test/upgrade_test.sh) compares the catalog an update leaves with the
-- one a fresh 1.1 install leaves, so a change made in one file only fails CI.

-- Models record their settings.  A 1.0 model's settings were not recorded:
-- the upgrade fills in the configuration as it stands, marked as such.
ALTER TABLE recsys.models ADD COLUMN settings jsonb NOT NULL DEFAULT '{}';

CREATE FUNCTION recsys.settings_snapshot(rel regclass, neighbors integer) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT pg_catalog.jsonb_build_object(
        'source', recsys.qualified_name(rel),
        'neighbors', neighbors,
        'weights', (SELECT COALESCE(pg_catalog.jsonb_object_agg(w.event_type, w.weight), '{}')
                      FROM recsys.event_weights w),
        'similarity_method', pg_catalog.current_setting('recsys.similarity_method', true))
$$;

UPDATE recsys.models m
   SET settings = pg_catalog.jsonb_build_object(
           'source', m.source_relation, 'neighbors', m.neighbors,
           'weights', (SELECT COALESCE(pg_catalog.jsonb_object_agg(w.event_type, w.weight), '{}')
                         FROM recsys.event_weights w),
           'recorded_at_upgrade', true);
