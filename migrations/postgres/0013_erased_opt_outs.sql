-- What an address had turned off when it was erased on its parent's request, kept under a
-- one-way hash of the address in lower case (SHA-256 with a fixed prefix, in hex) and
-- nothing else: a parent who asked to be forgotten is not mailed again what they had turned
-- off when a backend names the address once more. A type turned back on for the address
-- (`PUT /api/v1/email/preferences`, the preference page) lifts it.
CREATE TABLE erased_opt_outs (
    address_hash        TEXT PRIMARY KEY,
    weekly_digest_off   BIGINT NOT NULL DEFAULT 0,
    session_reports_off BIGINT NOT NULL DEFAULT 0,
    erased_at           BIGINT NOT NULL
);
