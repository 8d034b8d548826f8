"""``invoke bench``: the tcplab responder and the lab measured against references in the same run.

Modules (docs/bench.md has the whole story):

* :mod:`bench.stats`    medians of rounds with min/max, percentiles, ratios, targets (pure)
* :mod:`bench.report`   the table, the JSON file, the plot
* :mod:`bench.loadgen`  the asyncio load generator (standard library; runs in the host namespace)
* :mod:`bench.servers`  the kernel references: asyncio hello/http/hold servers and http.server
* :mod:`bench.scapy_responder`  the simplest fast Scapy responder (one reused L3RawSocket)
* :mod:`bench.procs`    local processes in the lab's namespaces: start, wait for a line, stop
* :mod:`bench.runner`   the orchestration: the bench lab, rounds, the load items 1, 2 and 4,
  the run; the other items live in modules of their own:
* :mod:`bench.micro`    item 3: in-process micro-benchmarks: checksums, RFC 1624 patches
* :mod:`bench.lab`      item 5: ``invoke up``/``down``/``demo`` timed, against bare ip and nc
* :mod:`bench.profiling`  item 6, with :mod:`bench.account` and :mod:`bench.hotpath`
* :mod:`bench.labs`     item 7: many labs at once
* :mod:`bench.grading`  item 8: ``invoke grade``
* :mod:`bench.rows`     the table's rows and the issues' targets, one function per item
* :mod:`bench.ab`       alternating rounds of responder variants on an existing lab
"""
