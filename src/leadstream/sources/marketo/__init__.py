"""The ``marketo`` source: Marketo's REST API polled into the activity stream (SPEC §10.1)."""
