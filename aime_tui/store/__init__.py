"""The store: the async SQLite store (one writer) and its schema migrations."""
