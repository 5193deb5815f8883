"""Database access shared by the services: engine, tables, migrations."""
