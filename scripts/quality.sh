#!/usr/bin/env bash
# quality.sh - the figures of docs/quality.md: recsys_tune on the real logs
# of the shared data sets, settings chosen on the validation window only,
# the choice then tested once next to the 1.0 defaults and popularity.
#
#   PGHOST=... PGPORT=... PGUSER=... PGDATABASE=... scripts/quality.sh /path/to/shared/data
#
# Needs the recsys extension in the database (it is created when missing).
# Loads the logs (scripts/load_online_retail.sql, scripts/load_quality_data.sql),
# runs recsys_tune(10, test_days, source => ...) for every (log, test_days)
# of WINDOWS, and prints one markdown table row per (window, method) with
# P@10, nDCG@10 and their 95% bootstrap CIs (recsys_evaluate's, seed 1).
# The configuration is left as it was (apply is false); the trials are kept
# in recsys_evaluations.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
datadir=${1:?pass the shared data directory}
WINDOWS=${WINDOWS:-"retail_interactions:3 retail_interactions:2 grocery_interactions:365 grocery_interactions:180 movielens_interactions:365 movielens_interactions:730"}
PSQL=(psql -X -q -v ON_ERROR_STOP=1)

"${PSQL[@]}" -c "CREATE EXTENSION IF NOT EXISTS recsys" >/dev/null
"${PSQL[@]}" -v datadir="$datadir" -f "$here/load_online_retail.sql" >/dev/null
"${PSQL[@]}" -v datadir="$datadir" -f "$here/load_quality_data.sql" >/dev/null

echo "| log | test days | method | settings (chosen on validation) | users | P@10 [95% CI] | nDCG@10 [95% CI] | validation nDCG@10 |"
echo "|---|---|---|---|---|---|---|---|"
for w in $WINDOWS; do
    rel=${w%:*}
    days=${w#*:}
    "${PSQL[@]}" -At -F '' -c "SET client_min_messages = warning" -c "
        WITH t AS (SELECT * FROM recsys_tune(10, $days, source => '$rel')),
             v AS (SELECT max(ndcg) FILTER (WHERE chosen) AS chosen_ndcg,
                          max(ndcg) FILTER (WHERE trial = 1) AS default_ndcg FROM t WHERE stage = 'validation')
        SELECT format('| %s | %s | %s | %s | %s | %s | %s | %s |', '$rel', $days, t.label,
                      CASE WHEN t.label = 'popularity' THEN 'most bought, not yet bought' ELSE
                          (SELECT string_agg(format('%s %s', key, value), ', ' ORDER BY key)
                             FROM jsonb_each_text(t.settings)) END,
                      t.users_evaluated,
                      to_char(t.\"precision\", 'FM0.0000') || CASE WHEN t.precision_lo IS NOT NULL THEN
                          format(' [%s, %s]', to_char(t.precision_lo, 'FM0.0000'), to_char(t.precision_hi, 'FM0.0000'))
                          ELSE ' (no CI)' END,
                      coalesce(to_char(t.ndcg, 'FM0.0000') || format(' [%s, %s]',
                          to_char(t.ndcg_lo, 'FM0.0000'), to_char(t.ndcg_hi, 'FM0.0000')), '-'),
                      CASE t.label WHEN 'tuned' THEN to_char(v.chosen_ndcg, 'FM0.0000')
                                   WHEN 'default' THEN to_char(v.default_ndcg, 'FM0.0000') ELSE '-' END)
          FROM t, v WHERE t.stage = 'test'
         ORDER BY CASE t.label WHEN 'tuned' THEN 1 WHEN 'default' THEN 2 ELSE 3 END" | grep '^|'
done
