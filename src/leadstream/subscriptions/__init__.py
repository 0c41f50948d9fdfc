"""Subscriptions (SPEC §3): what a subscriber registers, its delivery state, and the admin commands on it.

- ``config``: the settings a subscriber registers, as stored and as shown (secrets masked);
- ``validation``: checking a new subscription, a patch, an endpoint's address (errors name the field);
- ``state``: the delivery state that survives restarts, and the pure retry → pause → probe rules;
- ``control``: what admins asked (pause, resume, replay, patch, delete) and how it is applied;
- ``matching``: which events a subscription takes;
- ``challenge``: the Adobe I/O challenge an endpoint must pass;
- ``service``: the admin commands and the views the API shows.

Delivery imports the public types of this package (config, state, control); this package never
imports delivery: the running senders are reached through the ``Delivery`` port of ``service``.
"""
