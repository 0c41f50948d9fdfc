"""Sources (SPEC §10): a real platform's events brought into the log as if a producer had published them.

``budget`` and ``ledger``: the API budget of one Munchkin ID, shared by every source and node;
``planner``: when each type group is polled, from that budget; ``marketo``: the REST client.
"""
