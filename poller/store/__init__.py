"""PostgreSQL: pool, embedded server, migrations, crypto, and queries grouped by concern."""
