"""Operator alerts (SPEC §11): what happens to subscriptions (and sources), told to the operator's
endpoints as signed CloudEvents.

- ``model``: an alert endpoint's settings, their validation, and the CloudEvents sent;
- ``service``: register, list and delete endpoints, and read the recent alerts (the API, the console);
- ``dispatch``: the triggers — a subscription that pauses, reactivates, starts losing events to
  retention or lags past a threshold, once per transition — and the outbox sender: one row per
  alert and endpoint in the store, sent with Standard Webhooks HMAC, retried with backoff, held
  by one node at a time in a cluster.

Delivery knows nothing of this package: the dispatcher listens to the engine's hooks
(``DeliveryEngine.on_transition``, ``on_expired``), wired in ``runtime``.
"""
