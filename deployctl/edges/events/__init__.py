"""Deploy events for other systems: CloudEvents envelopes of CDEvents (:mod:`.envelope`) and the Kafka sink (:mod:`.kafka`)."""
