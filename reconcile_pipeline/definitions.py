"""The Dagster code location: imports and assembles, nothing else."""

import dagster as dg

defs = dg.Definitions()
