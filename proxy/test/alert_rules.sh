#!/usr/bin/env bash
# alert_rules.sh - the Prometheus alert rules in docs/operations.md
# ("Monitoring" > "Prometheus") are valid and fire when they should:
# promtool check rules, then promtool test rules with synthetic series of the
# proxy's gauges (a model ageing past 26 hours, a failed training, no model).
# promtool comes with Debian's prometheus package (scripts/install_deps.sh).
# Prints "N passed, M failed".
set -uo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
pass=0
fail=0
ok() { pass=$((pass + 1)); echo "ok   - $*"; }
bad() { fail=$((fail + 1)); echo "FAIL - $*"; }
if ! command -v promtool >/dev/null; then
    if [ -n "${CI:-}" ]; then bad "promtool missing (apt-get install prometheus)"; else echo "# skipped: no promtool (apt-get install prometheus)"; fi
    echo "$pass passed, $fail failed"; [ "$fail" = 0 ]; exit
fi
TMP=$(mktemp -d /tmp/recsys-alerts.XXXXXX)
trap 'rm -rf "$TMP"' EXIT
# The first yaml block of the Monitoring section.
awk '/^## Monitoring/ { p = 1; next } p && /^## / { exit } p && /^```yaml/ { b = 1; next } p && b && /^```/ { exit } p && b' \
    "$repo/docs/operations.md" > "$TMP/recsys-alerts.yml"
if out=$(promtool check rules "$TMP/recsys-alerts.yml" 2>&1); then ok "promtool check rules: $(echo "$out" | grep -o '[0-9]* rules found')"
else bad "promtool check rules: $out"; fi
cat > "$TMP/test.yml" <<'EOF'
rule_files: [recsys-alerts.yml]
evaluation_interval: 1m
tests:
  # p1: a model 25h50m old that nobody replaces, a training that fails at minute 11.
  # p2: a database without an active model (id -1).  p3: a fresh model, trainings succeed.
  - interval: 1m
    input_series:
      - series: 'recsys_active_model_age_seconds{instance="p1"}'
        values: '93000+60x30'
      - series: 'recsys_active_model_id{instance="p1"}'
        values: '7x30'
      - series: 'recsys_last_training_status{instance="p1",status="failed"}'
        values: '0x10 1x20'
      - series: 'recsys_last_training_status{instance="p1",status="succeeded"}'
        values: '1x10 0x20'
      - series: 'recsys_active_model_id{instance="p2"}'
        values: '-1x30'
      - series: 'recsys_active_model_age_seconds{instance="p3"}'
        values: '60+60x30'
      - series: 'recsys_active_model_id{instance="p3"}'
        values: '8x30'
      - series: 'recsys_last_training_status{instance="p3",status="succeeded"}'
        values: '1x30'
      - series: 'recsys_last_training_status{instance="p3",status="failed"}'
        values: '0x30'
    alert_rule_test:
      - eval_time: 24m        # p1 is past 26 h since minute 11, but not yet for 15 minutes
        alertname: RecsysModelTooOld
        exp_alerts: []
      - eval_time: 28m
        alertname: RecsysModelTooOld
        exp_alerts:
          - exp_labels: {severity: warning, instance: p1}
            exp_annotations:
              summary: "recsys model p1 is 1d 2h 18m 0s old"
              description: "No training replaced the active model; see SELECT * FROM recsys_training_runs ORDER BY run_id DESC LIMIT 5."
      - eval_time: 10m
        alertname: RecsysTrainingFailed
        exp_alerts: []
      - eval_time: 12m
        alertname: RecsysTrainingFailed
        exp_alerts:
          - exp_labels: {severity: warning, instance: p1, status: failed}
            exp_annotations:
              summary: "the last recsys training failed (p1)"
              description: "The previous model keeps serving. SELECT status, sqlstate, error, phase FROM recsys_training_runs WHERE kind = 'train' ORDER BY run_id DESC LIMIT 1."
      - eval_time: 10m
        alertname: RecsysNoModelGauges
        exp_alerts:
          - exp_labels: {severity: critical, instance: p2}
            exp_annotations:
              summary: "recsys-proxy reports no active model"
  # No proxy reports the gauge at all (the proxy cannot read recsys_models).
  - interval: 1m
    input_series:
      - series: 'recsys_proxy_dsns{instance="p4"}'
        values: '1x10'
    alert_rule_test:
      - eval_time: 10m
        alertname: RecsysNoModelGauges
        exp_alerts:
          - exp_labels: {severity: critical}
            exp_annotations:
              summary: "recsys-proxy reports no active model"
EOF
if out=$(cd "$TMP" && promtool test rules test.yml 2>&1); then ok "promtool test rules: the alerts fire for p1/p2, not for p3, and on an absent gauge"
else bad "promtool test rules:"; echo "$out" | sed 's/^/    /'; fi
echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
