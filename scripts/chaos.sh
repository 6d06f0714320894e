#!/usr/bin/env bash
# Runs the chaos suite (tests/chaos.rs, see docs/RELIABILITY.md) and prints its figures as a
# Markdown table, also written to target/chaos-figures.md.
#
#   scripts/chaos.sh                 # the whole suite
#   scripts/chaos.sh network         # only the tests whose name contains "network"
#
# The suite is part of `cargo test`; this script only adds --nocapture and the table.
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}"
mkdir -p "$target"
log="$target/chaos.log"
start=$(date +%s)
set +e
cargo test --test chaos -- --nocapture "$@" 2>&1 | tee "$log" | grep -E '^(test |test result|thread )'
status=${PIPESTATUS[0]}
set -e
{
    echo "Chaos suite, $(date -u +%Y-%m-%dT%H:%MZ), $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $(( $(date +%s) - start )) s, exit $status"
    echo
    echo "| test | figure | value |"
    echo "|---|---|---|"
    grep '^CHAOS-FIGURE ' "$log" | sed -E 's/^CHAOS-FIGURE (.*) \| (.*) \| (.*)$/| \1 | \2 | \3 |/'
} > "$target/chaos-figures.md"
echo
cat "$target/chaos-figures.md"
exit "$status"
