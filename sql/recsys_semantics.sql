-- The exact semantics on a tiny log, every number worked out by hand.
--
-- Events (weights view 1, click 2, add_to_cart 3, purchase 5):
--   u1: view 10, purchase 10, click 11          -> w(1,10)=6, w(1,11)=2
--   u2: add_to_cart 10, view 11, purchase 12    -> w(2,10)=3, w(2,11)=1, w(2,12)=5
--   u3: click 11, click 12, view 13             -> w(3,11)=2, w(3,12)=2, w(3,13)=1
--   u4: view 14                                 -> w(4,14)=1
-- plus five ignored rows: an unknown type, NULL user, NULL product, NULL time,
-- NULL type.
--
-- Item columns and norms:
--   10: (u1 6, u2 3)        |w|^2 = 45
--   11: (u1 2, u2 1, u3 2)  |w|^2 = 9
--   12: (u2 5, u3 2)        |w|^2 = 29
--   13: (u3 1)              |w|^2 = 1
--   14: (u4 1)              |w|^2 = 1
-- Cosines (i != j, > 0 only):
--   sim(10,11) = (6*2 + 3*1) / (sqrt 45 * 3)     = 15/20.1246 = 0.745356
--   sim(10,12) = (3*5)       / (sqrt 45 * sqrt 29) = 15/36.1248 = 0.415227
--   sim(11,12) = (1*5 + 2*2) / (3 * sqrt 29)     = 9/16.1555  = 0.557086
--   sim(11,13) = (2*1)       / (3 * 1)           = 0.666667
--   sim(12,13) = (2*1)       / (sqrt 29 * 1)     = 0.371391
--   10-13, *-14: no common user, so no neighbour.
-- Popularity (distinct users): 11:3, 10:2, 12:2, 13:1, 14:1 -> order 11, 10, 12, 13, 14.
INSERT INTO interactions VALUES
  (1, 10, 'view',        '2024-01-01 10:00+00'),
  (1, 10, 'purchase',    '2024-01-01 10:05+00'),
  (1, 11, 'click',       '2024-01-02 09:00+00'),
  (2, 10, 'add_to_cart', '2024-01-03 12:00+00'),
  (2, 11, 'view',        '2024-01-03 12:01+00'),
  (2, 12, 'purchase',    '2024-01-04 08:00+00'),
  (3, 11, 'click',       '2024-01-05 18:00+00'),
  (3, 12, 'click',       '2024-01-05 18:02+00'),
  (3, 13, 'view',        '2024-01-06 07:30+00'),
  (4, 14, 'view',        '2024-01-07 20:00+00'),
  (5, 10, 'wishlist',    '2024-01-08 00:00+00'),
  (NULL, 10, 'view',     '2024-01-08 00:00+00'),
  (6, NULL, 'view',      '2024-01-08 00:00+00'),
  (6, 11, 'view',        NULL),
  (6, 12, NULL,          '2024-01-08 00:00+00');

-- The weighted matrix as SQL sees it.
SELECT * FROM recsys_user_item_matrix ORDER BY user_id, product_id;

-- Train with the default K = 50: 4 users, 5 items, 10 events used,
-- 5 ignored, 2+3+3+2 = 10 neighbour pairs.
SELECT users, items, interactions_used, interactions_ignored, neighbor_pairs
  FROM recsys_train();

-- Stored neighbours: similarity descending, then id ascending.
SELECT product_id, round(similarity::numeric, 6) AS sim, rank FROM recsys_similar_items(11, 10);
SELECT product_id, round(similarity::numeric, 6) AS sim, rank FROM recsys_similar_items(12, 10);
SELECT product_id, round(similarity::numeric, 6) AS sim, rank FROM recsys_similar_items(10, 1);
-- Item 14 has no neighbours; an unknown item neither.
SELECT count(*) FROM recsys_similar_items(14, 10);
SELECT count(*) FROM recsys_similar_items(999, 10);

-- u1 (history 10:6, 11:2), top 3:
--   12: 6*0.415227 + 2*0.557086 = 3.605536
--   13: 2*0.666667             = 1.333333
--   then popularity: 11, 10 in history, 12, 13 listed -> 14 (1 user).
SELECT user_id, product_id, round(score::numeric, 6) AS score, rank, source
  FROM recsys_recommend(ARRAY[1], 3);

-- u2 (10:3, 11:1, 12:5): 13 = 1*0.666667 + 5*0.371391 = 2.523620; fill 14.
-- u3 (11:2, 12:2, 13:1): 10 = 2*0.7453560 + 2*0.4152274 = 2.321167; fill 14.
-- u4 (14:1): no neighbours -> 11, 10, 12 by popularity.
-- u99 (unknown): popularity only.
-- Output follows the input order, duplicates answered once (first seen).
SELECT user_id, product_id, round(score::numeric, 6) AS score, rank, source
  FROM recsys_recommend(ARRAY[3, 99, 2, 4, 3, 99], 3);

-- A user's newest event counts without retraining: u4 views 10 ->
-- history 10:1, 14:1 -> 11 (0.745356), 12 (0.415227), then 13 by popularity
-- (13 and 14 both have 1 user; 13 < 14, and 14 is in the history).
INSERT INTO interactions VALUES (4, 10, 'view', '2024-01-09 10:00+00');
SELECT user_id, product_id, round(score::numeric, 6) AS score, rank, source
  FROM recsys_recommend(ARRAY[4], 3);
DELETE FROM interactions WHERE user_id = 4 AND product_id = 10;

-- K = 1 keeps only each item's best neighbour:
--   10: [11]  11: [10]  12: [11]  13: [11]  -> 4 pairs.
SELECT users, items, neighbor_pairs FROM recsys_train(neighbors => 1);
-- u1 (10, 11): neighbours are each other, both in history -> no cf score;
-- popularity fills 12, 13, 14.
-- u3 (11:2, 12:2, 13:1): 10 = 2*0.745356 (12's kept neighbour is 11) = 1.490712.
SELECT user_id, product_id, round(score::numeric, 6) AS score, rank, source
  FROM recsys_recommend(ARRAY[1, 3], 3);

-- K = 0 keeps every positive similarity: 10 pairs again.
SELECT neighbor_pairs FROM recsys_train(neighbors => 0);

-- A user's history as recommending sees it.
SELECT product_id, weight, last_event FROM recsys_user_history(1, 10);

-- Serving counts the history with the weights the model was trained with,
-- not the live table: making purchases worth 0 changes nothing until the
-- next training (u1 stays 10:6, 11:2: 12 = 3.605536, 13 = 1.333333).
UPDATE recsys.event_weights SET weight = 0 WHERE event_type = 'purchase';
SELECT user_id, product_id, round(score::numeric, 6) AS score, rank, source
  FROM recsys_recommend(ARRAY[1], 2);
UPDATE recsys.event_weights SET weight = 5 WHERE event_type = 'purchase';

-- The Eigen method (an independent second computation) gives the same model.
SET recsys.similarity_method = 'eigen';
SELECT users, items, neighbor_pairs FROM recsys_train(neighbors => 50);
SELECT product_id, round(similarity::numeric, 6) AS sim, rank FROM recsys_similar_items(11, 10);
SELECT user_id, product_id, round(score::numeric, 6) AS score, rank, source
  FROM recsys_recommend(ARRAY[1, 2, 3, 4], 3);
SET recsys.similarity_method = 'lapack';
RESET recsys.similarity_method;
SELECT users, items, neighbor_pairs FROM recsys_train(neighbors => 50);
