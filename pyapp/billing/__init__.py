"""Plans, plan limits and what a tenant is charged for: the Python side of the SQL that enforces them."""
