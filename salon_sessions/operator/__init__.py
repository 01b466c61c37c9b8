"""The kopf operator that reconciles SalonSession resources (issue: the operator)."""
