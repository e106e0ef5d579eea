-- The access-token signing keys, shared by every replica so that all of
-- them sign with, and publish in their JWK set, the same keys. One row:
-- the key set (metadata in the clear, each private key sealed with
-- AES-256-GCM under a key derived from the deployment's secret pepper,
-- which the database never sees) and its generation, which a rotation
-- moves forward by one with a compare-and-swap.
CREATE TABLE signing_keys (
    only_row   boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    generation bigint NOT NULL CHECK (generation > 0),
    sealed     bytea NOT NULL
);
