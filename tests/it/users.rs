//! `slcs user …` against a running server (written by the CLI helper).
