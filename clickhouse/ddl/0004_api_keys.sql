-- API keys: each bound to one account; only a SHA-256 of the secret is stored.
CREATE TABLE IF NOT EXISTS {db}.api_keys
(
    account_id  LowCardinality(String) COMMENT 'The only account this key reads and changes',
    key_id      String COMMENT 'Public part of the key (al_<key_id>.<secret>)',
    secret_hash String COMMENT 'SHA-256 (hex) of the secret part',
    label       String COMMENT 'Free text: who or what uses the key',
    created_at  DateTime64(3, 'UTC') DEFAULT now64(3),
    revoked     UInt8 DEFAULT 0,
    version     UInt64 COMMENT 'Last change wins (revocation)'
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (account_id, key_id)
COMMENT 'API keys (hashed)';
