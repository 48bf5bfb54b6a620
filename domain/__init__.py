"""The care-coordination domain: aggregates, their events and rules, and the application."""
