"""ordersvc: an ASGI order service with no framework, on PostgreSQL and Redis (DATABASE_URL, REDIS_URL)."""
