"""Kafka exchange: inbound partner events, outbound relay of domain events, dead letters."""
