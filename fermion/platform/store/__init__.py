"""What the platform remembers: the SQL store (`database`), its tables, the frozen records it hands out, and the Alembic migrations."""
