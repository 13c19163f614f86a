-- recsys 1.0 -> 1.1: ALTER EXTENSION recsys UPDATE TO '1.1'.
\echo Use "ALTER EXTENSION recsys UPDATE TO '1.1'" to load this file. \quit

-- Every change to the SQL surface made in recsys--1.1.sql is made here too,
-- one section per change, in the order of the install script.  The upgrade
-- test (test/upgrade_test.sh) compares the catalog an update leaves with the
-- one a fresh 1.1 install leaves, so a change made in one file only fails CI.

-- Training within maintenance_work_mem in passes: the plan it follows.
-- How training a matrix of this shape proceeds within budget_kb kilobytes
-- (NULL: maintenance_work_mem): in memory (passes = 0), in passes over the
-- matrix spilled to disk, or refused (passes NULL); docs/operations.md.
CREATE FUNCTION recsys.train_plan(cells bigint, users bigint, items bigint, neighbors integer DEFAULT 50,
                                  budget_kb bigint DEFAULT NULL,
                                  OUT in_memory bigint, OUT minimum bigint, OUT passes bigint,
                                  OUT items_per_pass bigint)
RETURNS record AS 'MODULE_PATHNAME', 'recsys_train_plan' LANGUAGE C STABLE PARALLEL SAFE;
