// pg_limits.hpp - the limits every SQL-callable function checks its
// arguments against (docs/sql.md lists them).
#pragma once

#define RECSYS_MAX_TOP_N 1000        // top_n, max_items
#define RECSYS_MAX_USER_IDS 10000    // ids per recsys_recommend call
#define RECSYS_MAX_K 1000            // recsys_evaluate's list length
#define RECSYS_MAX_TEST_DAYS 36500   // recsys_evaluate's test window, days
