"""The event store's own layer: the recorders every process writes through (the hash chain
written with every event, reads that check it), the mapper (encryption bound to a row's
place) and the error every reader raises for an event that is not as it was recorded."""
