"""mpmd's benchmark harness: wrk against mpmd and its peer servers, measured the same way.

Owns everything under bench/ except protocol_micro.py. Speed is measured here, never asserted in
tests; the harness only drives real servers on loopback ports and writes results and
docs/benchmarks.md. It must never start a system service nor leave a process behind.
"""
