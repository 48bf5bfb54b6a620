"""Apache Kafka exchange: partner events in (commands), domain events out, dead letters."""
