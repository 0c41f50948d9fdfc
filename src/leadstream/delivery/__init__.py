"""Push delivery (SPEC §4): ``engine.DeliveryEngine`` runs one ``sender.Sender`` per subscription."""
