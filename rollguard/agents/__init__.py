"""The Faust app and the partition tasks around the pure core (join, evaluate, checkpoints)."""
