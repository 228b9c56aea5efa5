"""Topics and the join of requests, predictions and labels."""
