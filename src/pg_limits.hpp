// pg_limits.hpp - the limits every SQL-callable function checks its
// arguments against (docs/sql.md lists them).
#pragma once

#define RECSYS_MAX_TOP_N 1000        // top_n, max_items
#define RECSYS_MAX_USER_IDS 10000    // ids per recsys_recommend call
#define RECSYS_MAX_K 1000            // recsys_evaluate's list length
#define RECSYS_MAX_TEST_DAYS 36500   // recsys_evaluate's test window, days
#define RECSYS_MAX_ROWS_PER_CALL 100000   // ids x top_n of one recsys_recommend call
#define RECSYS_MAX_FILTER_ITEMS 1000000   // include_items / exclude_items elements
#define RECSYS_MAX_BASKET_ITEMS 10000     // item_ids per recsys_recommend_for_items call
