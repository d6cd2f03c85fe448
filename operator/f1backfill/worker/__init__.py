"""The embedding worker a YachtBackfill Job runs: claim, embed, write, repeat."""
