-- recsys 1.0 -> 1.1: ALTER EXTENSION recsys UPDATE TO '1.1'.
\echo Use "ALTER EXTENSION recsys UPDATE TO '1.1'" to load this file. \quit

-- Every change to the SQL surface made in recsys--1.1.sql is made here too,
-- one section per change, in the order of the install script.  The upgrade
-- test (test/upgrade_test.sh) compares the catalog an update leaves with the
-- one a fresh 1.1 install leaves, so a change made in one file only fails CI.
