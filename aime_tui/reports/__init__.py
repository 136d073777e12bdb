"""Reports read from the engine or the database: health, history, doctor."""
