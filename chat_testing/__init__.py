"""What the tests (``tests/``) and the benchmarks (``bench/``) share to run the real programs.

* :mod:`chat_testing.ports`: loopback ports, a block of its own for each test process;
* :mod:`chat_testing.waits`: waiting for a condition with a deadline;
* :mod:`chat_testing.servers`: ``chat-server`` processes;
* :mod:`chat_testing.redis_servers`: ``redis-server`` processes;
* :mod:`chat_testing.clusters`: several chat-servers on one Redis;
* :mod:`chat_testing.brokers`: the broker a test's servers use, chosen by name (memory,
  sqlite, redis, sentinel), so that one suite runs on each;
* :mod:`chat_testing.redis_clusters`: a real Redis Cluster (masters and replicas);
* :mod:`chat_testing.proxy`: a TCP relay that can hold, cut and silence connections;
* :mod:`chat_testing.tmux`: programs in private tmux servers, read from their panes;
* :mod:`chat_testing.workers`: a home, state directories and a port block per test process;
* :mod:`chat_testing.marks`: pytest marks that skip where a tool is missing (pytest only).
"""
