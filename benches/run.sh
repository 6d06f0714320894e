#!/usr/bin/env bash
# Regenerates the figures of docs/PERFORMANCE.md: builds the release binary, runs the criterion
# micro-benchmarks (benches/ews_codec.rs, benches/mapping.rs), then `taskbridge bench`, which
# rewrites the generated part of the document (machine, end-to-end table, criterion estimates)
# and keeps the prose. Extra arguments go to `taskbridge bench` (e.g. --edits 2000).
#
# Measure on a quiet machine: the simulator, the connector, the bench and exchangelib share its
# cores, and anything else running makes every figure worse. The exchangelib comparison runs
# when `python3 -c "import exchangelib"` works (pip install exchangelib).
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}"
cargo build --release --bin taskbridge
cargo bench --bench ews_codec --bench mapping
"$target/release/taskbridge" bench --write-doc docs/PERFORMANCE.md --criterion "$target/criterion" "$@"
