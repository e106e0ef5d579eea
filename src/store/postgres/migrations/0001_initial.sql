-- slcs schema 1 on PostgreSQL. Every record is stored as the JSON bytes
-- serde writes (the same bytes as the sled backend, so an export moves
-- them unchanged); the columns beside it are what SQL needs to find,
-- order, constrain and expire records. Text keys sort by bytes (COLLATE
-- "C"), as sled's keys do.

CREATE TABLE slcs_meta (
    key   text PRIMARY KEY,
    value text NOT NULL
);

-- The issuance log. The primary key is what makes serials unique across
-- replicas (RFC 5280 §4.1.2.2): an intent for a serial in use fails.
CREATE TABLE issuance (
    serial      bytea PRIMARY KEY,
    subject     text COLLATE "C" NOT NULL,
    key_sha256  text NOT NULL,
    recorded_at timestamptz NOT NULL,
    record      bytea NOT NULL
);
CREATE INDEX issuance_by_time ON issuance (recorded_at DESC);
CREATE INDEX issuance_by_subject ON issuance (subject, recorded_at DESC);
CREATE INDEX issuance_by_key ON issuance (key_sha256);

-- Where each certificate came from: its grant ('g'), its token ('t') and
-- every client of its chain ('c'), for cascading revocation.
CREATE TABLE issuance_origins (
    kind   "char" NOT NULL,
    origin text COLLATE "C" NOT NULL,
    serial bytea NOT NULL REFERENCES issuance (serial) ON DELETE CASCADE,
    PRIMARY KEY (kind, origin, serial)
);

-- The audit hash chain (src/store/audit_chain.rs). `stored` is the sealed
-- record; audit_head holds the newest link (and the one before it), and an
-- append moves it in the same statement that stores the record, holding
-- its row lock until commit, so the replicas of one deployment write one
-- chain, in one order.
CREATE TABLE audit (
    seq    bigint PRIMARY KEY CHECK (seq > 0),
    stored bytea NOT NULL
);
CREATE TABLE audit_head (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    seq      bigint NOT NULL,
    hash     bytea NOT NULL CHECK (length(hash) = 32),
    prev     bytea NOT NULL CHECK (length(prev) = 32)
);
INSERT INTO audit_head (seq, hash, prev)
    VALUES (0, decode(repeat('00', 32), 'hex'), decode(repeat('00', 32), 'hex'));
CREATE TABLE audit_persons (
    sub text COLLATE "C" NOT NULL,
    seq bigint NOT NULL REFERENCES audit (seq),
    PRIMARY KEY (sub, seq)
);

-- Clients, keyed by the case-folded id (ATTACKS REG-05: `Portal` cannot
-- be registered beside `portal`).
CREATE TABLE clients (
    folded_id text COLLATE "C" PRIMARY KEY,
    record    bytea NOT NULL
);

CREATE TABLE revoked_tokens (
    jti        text PRIMARY KEY,
    expires_at timestamptz NOT NULL
);
CREATE TABLE revoked_grants (
    grant_id   text PRIMARY KEY,
    revoked_at timestamptz NOT NULL
);
-- Single-use ids come from clients (an assertion's jti) and may hold any
-- byte, hence bytea.
CREATE TABLE used_once (
    id         bytea PRIMARY KEY,
    expires_at timestamptz NOT NULL
);
CREATE TABLE quotas (
    key        text PRIMARY KEY,
    used       bigint NOT NULL,
    window_end timestamptz NOT NULL
);

CREATE TABLE users (
    sub             text COLLATE "C" PRIMARY KEY,
    username_folded text UNIQUE NOT NULL,
    record          bytea NOT NULL
);
CREATE TABLE sessions (
    id_hash    text COLLATE "C" PRIMARY KEY,
    sub        text NOT NULL,
    expires_at timestamptz NOT NULL,
    record     bytea NOT NULL
);
CREATE INDEX sessions_by_sub ON sessions (sub);

CREATE TABLE approvals (
    id     text PRIMARY KEY,
    record bytea NOT NULL
);
-- Which approval is a person's current one for a client.
CREATE TABLE current_approvals (
    sub         text NOT NULL,
    client_id   text COLLATE "C" NOT NULL,
    approval_id text NOT NULL REFERENCES approvals (id),
    PRIMARY KEY (sub, client_id)
);
CREATE TABLE approval_grants (
    approval_id text NOT NULL,
    grant_id    text COLLATE "C" NOT NULL,
    PRIMARY KEY (approval_id, grant_id)
);

CREATE TABLE pending_authorizations (
    id         text PRIMARY KEY,
    expires_at timestamptz NOT NULL,
    record     bytea NOT NULL
);
CREATE TABLE authorization_codes (
    hash       text PRIMARY KEY,
    expires_at timestamptz NOT NULL,
    record     bytea NOT NULL
);
CREATE TABLE refresh_tokens (
    hash       text PRIMARY KEY,
    expires_at timestamptz NOT NULL,
    record     bytea NOT NULL
);
CREATE TABLE device_codes (
    hash       text PRIMARY KEY,
    user_code  text UNIQUE NOT NULL,
    expires_at timestamptz NOT NULL,
    record     bytea NOT NULL
);
CREATE TABLE token_lineage (
    jti        text COLLATE "C" PRIMARY KEY,
    parent_jti text NOT NULL,
    expires_at timestamptz NOT NULL,
    record     bytea NOT NULL
);
CREATE INDEX token_lineage_by_parent ON token_lineage (parent_jti);
