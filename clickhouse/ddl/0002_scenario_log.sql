-- The scenario log: everything that happened to a contact inside an automation (scenario).
-- Derived by the worker from automation events and from the tracker / email events of enrolled
-- contacts, in event-time order. Rows are deterministic (same events, same rows), so re-delivery and
-- replay rewrite identical rows; reads use FINAL.
CREATE TABLE IF NOT EXISTS {db}.scenario_log
(
    account_id      LowCardinality(String) COMMENT 'Account (tenant)',
    scenario_id     String COMMENT 'Automation (scenario) id',
    scenario_name   String COMMENT 'Automation name at the time of the event',
    occurred_at     DateTime64(3, 'UTC') COMMENT 'date: when it happened (UTC, ms)',
    contact_id      UInt64 COMMENT 'Internal contact id (0 = unknown)',
    email           String COMMENT 'user_email: the contact email',
    step_id         String COMMENT 'Step the contact was at when it happened',
    start_id        String COMMENT 'Entry point; only set when the scenario has several',
    workflow_point  LowCardinality(String) COMMENT 'started, restarted, exited, manually_removed; empty otherwise',
    type            LowCardinality(String) COMMENT 'Event type, e.g. form, identify, templates_clicked, automation_started',
    message_code    LowCardinality(String) COMMENT 'Message catalogue code; rendered in English or French when read',
    message_params  String COMMENT 'Parameters of the message (JSON)',
    attribution     LowCardinality(String) COMMENT 'automation (its own event), message (the email this scenario sent), enrollment (active at its current step)',
    source_event_id String COMMENT 'event_id of the event this row derives from',
    src_topic       LowCardinality(String),
    src_partition   UInt32,
    src_offset      UInt64,
    ingested_at     DateTime64(3, 'UTC') DEFAULT now64(3),
    INDEX idx_email email TYPE bloom_filter GRANULARITY 4,
    INDEX idx_step step_id TYPE bloom_filter GRANULARITY 4
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(occurred_at)
ORDER BY (account_id, scenario_id, occurred_at, source_event_id)
COMMENT 'Scenario log (read with FINAL)';
