"""``invoke bench``: the tcplab responder and the lab measured against references in the same run.

Modules (docs/bench.md has the whole story):

* :mod:`bench.stats`    medians of rounds with min/max, percentiles, ratios, targets (pure)
* :mod:`bench.report`   the table, the JSON file, the plot
* :mod:`bench.loadgen`  the asyncio load generator (standard library; runs in the host namespace)
* :mod:`bench.servers`  the kernel references: asyncio hello/http/hold servers and http.server
* :mod:`bench.scapy_responder`  the simplest fast Scapy responder (one reused L3RawSocket)
* :mod:`bench.micro`    in-process micro-benchmarks: checksums, RFC 1624 patches
* :mod:`bench.procs`    local processes in the lab's namespaces: start, wait for a line, stop
* :mod:`bench.runner`   the orchestration: lab, rounds, items 1-6
"""
