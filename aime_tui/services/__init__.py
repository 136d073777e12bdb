"""The hosted services: Last.fm tracker, Roon tracker, collection scheduler."""
