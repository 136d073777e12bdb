"""The engine's core: the service state model, faults, supervisor, engine, wake detection and the instance lock. No Textual here."""
