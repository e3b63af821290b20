-- Widget branding defaults: the "Powered by" label and link a widget shows, resolved once in
-- SQL: the chatbot's own (config.branding.powered_by_label / powered_by_url) → the workspace's
-- default (parley.tenant_branding) → the server's (database settings parley.branding_label /
-- parley.branding_url).

SELECT parley.apply_tenant_policies('parley.tenant_branding');
GRANT SELECT ON parley.tenant_branding TO parley_app, parley_auth;
