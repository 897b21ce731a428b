"""The per-host agent: the wiring service kept warm behind an HTTP API on a
Unix socket, with events, Prometheus metrics and self-repair (docs/agent.md).

Layout: :mod:`.agent` composes; :mod:`.api` maps routes to use cases;
:mod:`.server` is the HTTP transport (peer credentials); :mod:`.writer`
group-commits changes; :mod:`.repair` and :mod:`.watch` reconcile and repair;
:mod:`.events`, :mod:`.metrics`, :mod:`.openapi` are what it reports;
:mod:`.requests` parses request bodies; :mod:`.command` is ``vifwire agent``.
"""
