"""What operators do between runs (quarantine, history), as plain functions over the bookkeeping
tables: no Dagster, no printing, so the command line and the review console share them."""
