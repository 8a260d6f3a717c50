"""Demonstrations of the engine on synthetic sources.

- ``python -m providers.demo`` (``make run``): a walkthrough of two cycles with a real worker
  (:mod:`providers.demo.walkthrough`);
- :mod:`providers.demo.app`: the demo app that ``make cluster`` and ``docker-compose.yml`` run;
- ``python -m providers.demo.cluster`` (``make cluster``): the compose topology as local
  processes (:mod:`providers.demo.cluster`).
"""
