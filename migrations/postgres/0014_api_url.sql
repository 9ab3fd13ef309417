-- The provider API the proxy sends a client-credentials connection's requests to (issue 19). It
-- may hold {domain} (Docplanner). Null for SnapInspect connections (they use SNAPINSPECT_API_URL)
-- and for a custom provider given none (the proxy then answers 409 `no_api_url`).
alter table connections add column api_url text;
