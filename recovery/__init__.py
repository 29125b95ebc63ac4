"""Recovery: the backstop reconciler, replay from the event store or Kafka, dead-letter redrive."""
