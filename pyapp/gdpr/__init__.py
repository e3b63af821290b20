"""GDPR: export a visitor's or a whole workspace's data as a zip, erase a visitor, restore a deleted
workspace during its grace; the rules and the purge live in sql/66_gdpr.sql."""
