"""Kafka for rollguard: a local KRaft broker and topic administration."""
