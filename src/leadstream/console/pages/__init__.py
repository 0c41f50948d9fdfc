"""The console's pages over the running service (SPEC §11): what ``/ui/`` shows and does.

The foundation around them (``leadstream.console``: sessions, CSRF, templates, charts, the
sampler) knows nothing of leadstream's data; these modules do, and reach the service only through
``deps`` — the same ``Runtime`` the API's routes use, the same services, the same audit trail, and
the same rule for who sees what (``Principal``: 404 for another tenant's things, 403 for a
missing scope). Nothing here runs per event: pages read what the services show, and the sampler
reads counters every few seconds (``wiring.readings``).

- ``wiring``: the console app for a service, sign-in against its keys, the sampler's readings;
- ``overview``, ``subscriptions``, ``events``, ``sources``, ``catalog``, ``operator`` (keys, audit).
"""

from leadstream.console.pages.wiring import console_app, readings

__all__ = ["console_app", "readings"]
