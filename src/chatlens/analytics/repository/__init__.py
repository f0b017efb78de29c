"""Every SQL statement of analytics, by what it reads; each returns typed rows."""
