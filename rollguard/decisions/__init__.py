"""From statistics to control events: event-time ordering, the policy per mode."""
