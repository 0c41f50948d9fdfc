"""Sources (SPEC §10): a real platform's events brought into the log as if a producer had published them.

``config``: a source's settings and their checks; ``service``: the admin commands and views;
``runner``: the pollers of the sources this node holds (by lease); ``marketo``: the REST client
and the poller; ``budget`` and ``ledger``: the API budget of one Munchkin ID, shared by every
source and node (kept in the store); ``planner``: when each type group is polled, from that
budget; ``metrics``: what Prometheus sees.
"""
