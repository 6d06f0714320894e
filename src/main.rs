//! The `taskbridge` command line.

fn main() {}
