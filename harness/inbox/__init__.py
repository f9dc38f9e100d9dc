"""The harness inbox: a web page over the control API for deliveries, Sent Items, faults, the scenario and
(given the storage connection) outbox's status rows and poison queue. See docs/harness.md."""
