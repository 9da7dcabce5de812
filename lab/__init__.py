"""Private servers for tests, benchmarks and the demo: never used by a deployed gateway or ledger.

``lab.mosquitto`` starts Mosquitto from the production config template on free loopback ports and
builds a throwaway PKI with ``deploy/pki/make-test-pki.sh``; ``lab.demo`` is ``make demo``, which
drives both the agent and the ledger (the one place besides the tests that imports both).
"""
