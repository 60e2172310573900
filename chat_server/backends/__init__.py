"""Broker backends, chosen by the scheme of ``--broker-url`` (``urls.py``).

* ``sqlite://`` (the default): one process, everything worth keeping also on disk; see
  ``sqlite.py`` (it is the memory backend, journaled).
* ``memory://``: one process, forgotten when it stops; see ``memory.py``.
* ``redis://``, ``rediss://``, ``unix://``: any number of processes and machines sharing one
  Redis (or Valkey); see the ``redis`` package.

The interface every backend implements, and the promises it keeps, are in ``base.py``; which
one a URL names, ``urls.py``; ``factory.py`` opens it. Every backend is built the same way:
``Backend(settings, node_id)``.
"""
