#!/usr/bin/env bash
# Regenerates the figures of docs/PERFORMANCE.md: runs the criterion micro-benchmarks
# (benches/ews_codec.rs, benches/mapping.rs), then `cargo xtask bench`, which builds the release
# binary, measures it and rewrites the generated part of the document (machine, end-to-end
# table, criterion estimates), keeping the prose. Extra arguments go to `cargo xtask bench`
# (e.g. --edits 2000).
#
# Measure on a quiet machine: the simulator, the connector, the bench and exchangelib share its
# cores, and anything else running makes every figure worse. The exchangelib comparison runs
# when `python3 -c "import exchangelib"` works (pip install exchangelib).
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}"
cargo bench --bench ews_codec --bench mapping
# The harness itself in release too: it paces up to thousands of edits a second.
cargo run --release --package xtask -- bench --write-doc docs/PERFORMANCE.md --criterion "$target/criterion" "$@"
