"""The link, both ends: batch codec, topics, acks, MQTT uplink and intake."""
