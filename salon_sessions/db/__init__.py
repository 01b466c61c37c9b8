"""PostgreSQL: versioned migrations of the project's tables and the legacy data conversion.

neonize/whatsmeow create and migrate their own `whatsmeow_*` tables in the same database;
nothing here touches them.
"""
