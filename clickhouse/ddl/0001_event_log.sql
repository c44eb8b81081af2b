-- The event log: one row per tracker, form, list, email and automation event.
-- Re-delivery and replay write the same row again; ReplacingMergeTree on the full sorting key
-- (which ends with event_id) plus FINAL in every read shows each event exactly once.
CREATE TABLE IF NOT EXISTS {db}.event_log
(
    account_id    LowCardinality(String) COMMENT 'Account (tenant) the event belongs to',
    event_id      String COMMENT 'Unique id given by the producer, stable across retries: the dedup key',
    event_type    LowCardinality(String) COMMENT 'track, track_link, page, identify, form, list_addition, campaign_*, templates_*, automation_*',
    event_name    String COMMENT 'Name of a custom tracked event (type track), e.g. order_created',
    occurred_at   DateTime64(3, 'UTC') COMMENT 'When the event happened (UTC, ms)',
    contact_id    UInt64 COMMENT 'Internal contact id; 0 when the producer gave only an email',
    email         String COMMENT 'Contact email, lower-cased; empty when only contact_id was given',
    ip            String COMMENT 'Contact IP; empty = triggered internally (shown as internal request)',
    form_id       String,
    list_id       String,
    campaign_id   UInt64 COMMENT 'Campaign (marketing email) id; 0 = none',
    template_id   UInt64 COMMENT 'Transactional email template id; 0 = none',
    message_id    String COMMENT 'Message id of the email sent',
    automation_id String COMMENT 'Scenario (automation) id of automation events',
    step_id       String COMMENT 'Scenario step of automation events',
    start_id      String COMMENT 'Entry point of the scenario, automation events',
    url           String COMMENT 'Link clicked or page viewed',
    source_name   String COMMENT 'Name of the form / list / email / automation / event the event happened in',
    properties    String COMMENT 'Free properties sent by the producer (JSON)',
    details       String COMMENT 'Other fields of the event type (JSON): names, reason, action, wait_until, ...',
    src_topic     LowCardinality(String) COMMENT 'Kafka topic the row was read from',
    src_partition UInt32 COMMENT 'Kafka partition the row was read from',
    src_offset    UInt64 COMMENT 'Kafka offset the row was read from',
    ingested_at   DateTime64(3, 'UTC') DEFAULT now64(3) COMMENT 'When the row was written',
    INDEX idx_type event_type TYPE set(64) GRANULARITY 4,
    INDEX idx_contact contact_id TYPE bloom_filter GRANULARITY 4,
    INDEX idx_message message_id TYPE bloom_filter GRANULARITY 4
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(occurred_at)
ORDER BY (account_id, email, occurred_at, event_id)
SETTINGS index_granularity = 8192
COMMENT 'Event log: every tracker, email and automation event (read with FINAL)';
