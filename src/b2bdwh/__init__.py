"""b2bdwh: a B2B sales data warehouse on PostgreSQL."""

__version__ = "0.1.0"
