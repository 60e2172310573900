"""Broker backends, chosen by the scheme of ``--broker-url`` (``urls.py``).

* ``memory://`` (the default): one process; see ``memory.py``.
* ``redis://``, ``rediss://``, ``unix://``: any number of processes and machines sharing one
  Redis (or Valkey); see the ``redis`` package.

The interface every backend implements, and the promises it keeps, are in ``base.py``; which
one a URL names, ``urls.py``; ``factory.py`` opens it. Both backends are built the same way:
``Backend(settings, node_id)``.
"""
