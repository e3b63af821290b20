"""Custom domains (white-label plans): claims, DNS verification, the Host → tenant route.

The rules (who may claim, what proves a name, when it is active, what a downgrade does) are in
sql/95_domains.sql. `dns` asks the configured resolver what a name's records are (no rules);
`routes` is the HTTP surface (API, the on-demand TLS question) and `host` the check that widget
traffic on a custom domain only reaches its own tenant's chatbots.
"""
