"""Read models built from the one ordered event log; rebuildable and replayable as of a time."""
