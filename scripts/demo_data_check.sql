-- demo_data_check.sql - verify the invariants of the data made by
-- scripts/demo_data.sql.  Raises an error (non-zero psql exit with
-- ON_ERROR_STOP) on the first violated invariant; prints a summary otherwise.
--
--   psql -v ON_ERROR_STOP=1 -f scripts/demo_data_check.sql

\set ON_ERROR_STOP on

DO $check$
DECLARE
    n bigint;
    n2 bigint;
    nv bigint; nc bigint; na bigint; np bigint;
BEGIN
    -- tables are not empty
    SELECT count(*) INTO n FROM users;
    IF n = 0 THEN RAISE EXCEPTION 'demo_data_check: users is empty'; END IF;
    SELECT count(*) INTO n FROM products;
    IF n = 0 THEN RAISE EXCEPTION 'demo_data_check: products is empty'; END IF;
    SELECT count(*) INTO n FROM interactions;
    IF n = 0 THEN RAISE EXCEPTION 'demo_data_check: interactions is empty'; END IF;

    -- no NULLs, only the four event types
    SELECT count(*) INTO n FROM interactions
    WHERE user_id IS NULL OR product_id IS NULL OR event_time IS NULL
       OR event_type IS NULL
       OR event_type NOT IN ('view', 'click', 'add_to_cart', 'purchase');
    IF n > 0 THEN
        RAISE EXCEPTION 'demo_data_check: % interactions with NULLs or unknown event_type', n;
    END IF;

    -- referential integrity
    SELECT count(*) INTO n FROM interactions i
    WHERE NOT EXISTS (SELECT 1 FROM users u WHERE u.user_id = i.user_id)
       OR NOT EXISTS (SELECT 1 FROM products p WHERE p.product_id = i.product_id);
    IF n > 0 THEN
        RAISE EXCEPTION 'demo_data_check: % interactions with unknown user or product', n;
    END IF;
    SELECT count(*) INTO n FROM orders o
    WHERE NOT EXISTS (SELECT 1 FROM users u WHERE u.user_id = o.user_id);
    IF n > 0 THEN RAISE EXCEPTION 'demo_data_check: % orders with unknown user', n; END IF;

    -- plausible attributes
    SELECT count(*) INTO n FROM users
    WHERE age NOT BETWEEN 16 AND 100 OR gender IS NULL OR city IS NULL
       OR signup_date IS NULL OR signup_date > current_date;
    IF n > 0 THEN RAISE EXCEPTION 'demo_data_check: % users with implausible attributes', n; END IF;
    SELECT count(*) INTO n FROM products
    WHERE price IS NULL OR price <= 0 OR product_name IS NULL OR category IS NULL;
    IF n > 0 THEN RAISE EXCEPTION 'demo_data_check: % products with bad name/category/price', n; END IF;

    -- no event in the future or before the user's signup (UTC days)
    SELECT count(*) INTO n FROM interactions WHERE event_time > now();
    IF n > 0 THEN RAISE EXCEPTION 'demo_data_check: % events in the future', n; END IF;
    SELECT count(*) INTO n FROM interactions i JOIN users u USING (user_id)
    WHERE (i.event_time AT TIME ZONE 'UTC')::date < u.signup_date;
    IF n > 0 THEN RAISE EXCEPTION 'demo_data_check: % events before the user signed up', n; END IF;

    -- funnel: every click / add_to_cart / purchase follows, strictly later,
    -- an event of the previous step for the same user and product
    SELECT count(*) INTO n FROM interactions c
    WHERE c.event_type = 'click' AND NOT EXISTS (
        SELECT 1 FROM interactions v
        WHERE v.user_id = c.user_id AND v.product_id = c.product_id
          AND v.event_type = 'view' AND v.event_time < c.event_time);
    IF n > 0 THEN RAISE EXCEPTION 'demo_data_check: % clicks without an earlier view', n; END IF;

    SELECT count(*) INTO n FROM interactions c
    WHERE c.event_type = 'add_to_cart' AND NOT EXISTS (
        SELECT 1 FROM interactions v
        WHERE v.user_id = c.user_id AND v.product_id = c.product_id
          AND v.event_type = 'click' AND v.event_time < c.event_time);
    IF n > 0 THEN RAISE EXCEPTION 'demo_data_check: % add_to_cart without an earlier click', n; END IF;

    SELECT count(*) INTO n FROM interactions c
    WHERE c.event_type = 'purchase' AND NOT EXISTS (
        SELECT 1 FROM interactions v
        WHERE v.user_id = c.user_id AND v.product_id = c.product_id
          AND v.event_type = 'add_to_cart' AND v.event_time < c.event_time);
    IF n > 0 THEN RAISE EXCEPTION 'demo_data_check: % purchases without an earlier add_to_cart', n; END IF;

    -- per (user, product): counts never grow down the funnel
    SELECT count(*) INTO n FROM (
        SELECT user_id, product_id,
               count(*) FILTER (WHERE event_type = 'view')        AS v,
               count(*) FILTER (WHERE event_type = 'click')       AS c,
               count(*) FILTER (WHERE event_type = 'add_to_cart') AS a,
               count(*) FILTER (WHERE event_type = 'purchase')    AS p
        FROM interactions GROUP BY user_id, product_id) s
    WHERE NOT (v >= c AND c >= a AND a >= p);
    IF n > 0 THEN
        RAISE EXCEPTION 'demo_data_check: % (user, product) pairs with a funnel step above the previous one', n;
    END IF;

    -- decreasing totals down the funnel, every step present
    SELECT count(*) FILTER (WHERE event_type = 'view'),
           count(*) FILTER (WHERE event_type = 'click'),
           count(*) FILTER (WHERE event_type = 'add_to_cart'),
           count(*) FILTER (WHERE event_type = 'purchase')
      INTO nv, nc, na, np FROM interactions;
    IF NOT (nv > nc AND nc > na AND na > np AND np > 0) THEN
        RAISE EXCEPTION 'demo_data_check: funnel totals not strictly decreasing: view % click % cart % purchase %',
            nv, nc, na, np;
    END IF;

    -- orders <-> purchases: one order per (user, UTC day) with purchases,
    -- same user, order_date = last purchase of that day, total = sum of prices
    SELECT count(*) INTO n FROM (
        SELECT user_id, (order_date AT TIME ZONE 'UTC')::date
        FROM orders GROUP BY 1, 2 HAVING count(*) > 1) s;
    IF n > 0 THEN RAISE EXCEPTION 'demo_data_check: % (user, day) with more than one order', n; END IF;

    WITH pd AS (
        SELECT i.user_id, (i.event_time AT TIME ZONE 'UTC')::date AS day,
               max(i.event_time) AS last_purchase, sum(p.price) AS amount
        FROM interactions i JOIN products p USING (product_id)
        WHERE i.event_type = 'purchase'
        GROUP BY 1, 2)
    SELECT count(*) INTO n
    FROM pd FULL JOIN orders o
      ON o.user_id = pd.user_id AND (o.order_date AT TIME ZONE 'UTC')::date = pd.day
    WHERE pd.user_id IS NULL OR o.order_id IS NULL
       OR o.total_amount IS DISTINCT FROM pd.amount
       OR o.order_date IS DISTINCT FROM pd.last_purchase;
    IF n > 0 THEN
        RAISE EXCEPTION 'demo_data_check: % orders/purchase days that do not agree (missing order, order without purchases, wrong total or date)', n;
    END IF;

    SELECT count(*) INTO n FROM orders WHERE total_amount <= 0;
    IF n > 0 THEN RAISE EXCEPTION 'demo_data_check: % orders with a non-positive total', n; END IF;

    -- interactions(user_id) is indexed
    SELECT count(*) INTO n FROM pg_index x
    JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = x.indkey[0]
    WHERE x.indrelid = 'interactions'::regclass AND a.attname = 'user_id';
    IF n = 0 THEN RAISE EXCEPTION 'demo_data_check: no index on interactions(user_id)'; END IF;

    -- taste clusters give item-item signal: the most co-interacted pair is
    -- shared by more than one user (on the first 5000 users, to stay fast)
    SELECT coalesce(max(c), 0) INTO n2 FROM (
        SELECT count(*) AS c
        FROM (SELECT DISTINCT user_id, product_id FROM interactions WHERE user_id <= 5000) a
        JOIN (SELECT DISTINCT user_id, product_id FROM interactions WHERE user_id <= 5000) b
          ON a.user_id = b.user_id AND a.product_id < b.product_id
        GROUP BY a.product_id, b.product_id
        ORDER BY count(*) DESC LIMIT 1) s;
    IF n2 < 2 THEN RAISE EXCEPTION 'demo_data_check: no product pair shared by two users'; END IF;

    RAISE NOTICE 'demo_data_check: OK (view % > click % > add_to_cart % > purchase %, % orders)',
        nv, nc, na, np, (SELECT count(*) FROM orders);
END
$check$;
