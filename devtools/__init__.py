"""Development and test tooling: local etcd clusters, fault proxies, the demo, chaos.

Not part of the wheel users install; it runs from a checkout (``make demo``,
``make chaos``, the test suite, the benchmarks).
"""
