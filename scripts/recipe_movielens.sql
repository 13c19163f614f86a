-- recipe_movielens.sql - MovieLens ratings as the value of one event type
-- (docs/sql.md, "Loading real logs").  test/source_realdata_test.sh runs it.
--
--   cd /path/to/shared/data && psql -f /path/to/recsys/scripts/recipe_movielens.sql
CREATE TABLE ratings (user_id int, movie_id int, action text, epoch bigint, event_time timestamptz,
                      rating real);
\copy ratings FROM 'movielens_latest_small/interactions.csv' WITH (FORMAT csv, HEADER true)
INSERT INTO recsys.event_weights VALUES ('rating', 1);
SELECT * FROM recsys_set_source('ratings', 'user_id', 'movie_id', 'action', 'event_time', 'rating');
SELECT users, items, interactions_used, interactions_ignored FROM recsys_train(neighbors => 20);
