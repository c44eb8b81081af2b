-- A time-ordered copy of the event log for CSV dumps (query/csv_export.py): a dump is one account over a
-- date range, which event_log (ORDER BY account_id, email, ...) can only serve by reading and sorting
-- the account's whole range again for every chunk. Here the range is one contiguous slice of the key.
-- Only the columns the `events` view shows or filters on. Same deduplication as event_log: a
-- ReplacingMergeTree whose key ends with event_id, read with FINAL; the sorting key keeps
-- (account_id, occurred_at, event_id), so the duplicates of an event are one key, as in event_log.
-- Filled by the materialized view below from every insert into event_log (the replay rebuilds it from
-- its shadow event log, replay/run.py); the TTL follows event_log's (autologs/migrate.py).
CREATE TABLE IF NOT EXISTS {db}.event_log_by_time
(
    account_id    LowCardinality(String) COMMENT 'Account (tenant) the event belongs to',
    occurred_at   DateTime64(3, 'UTC') COMMENT 'When the event happened (UTC, ms)',
    event_id      String COMMENT 'Unique id given by the producer: the dedup key',
    event_type    LowCardinality(String) COMMENT 'Event type',
    event_name    String COMMENT 'Name of a custom tracked event (type track)',
    contact_id    UInt64 COMMENT 'Internal contact id; 0 = none',
    email         String COMMENT 'Contact email, lower-cased',
    ip            String COMMENT 'Contact IP; empty = internal request',
    campaign_id   UInt64 COMMENT 'Campaign id; 0 = none',
    template_id   UInt64 COMMENT 'Transactional email template id; 0 = none',
    message_id    String COMMENT 'Message id of the email sent',
    automation_id String COMMENT 'Scenario (automation) id',
    step_id       String COMMENT 'Scenario step',
    url           String COMMENT 'Link clicked or page viewed',
    source_name   String COMMENT 'Name of the form / list / email / automation / event'
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(occurred_at)
ORDER BY (account_id, occurred_at, event_id)
SETTINGS index_granularity = 8192
COMMENT 'Event log by time (CSV dumps): the events view columns of event_log, read with FINAL';

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.event_log_by_time_mv TO {db}.event_log_by_time AS
SELECT account_id, occurred_at, event_id, event_type, event_name, contact_id, email, ip, campaign_id,
       template_id, message_id, automation_id, step_id, url, source_name
FROM {db}.event_log;

-- Rows logged before this file: copied once (a row that the view also copied meanwhile is one key, so
-- FINAL shows it once).
INSERT INTO {db}.event_log_by_time
SELECT account_id, occurred_at, event_id, event_type, event_name, contact_id, email, ip, campaign_id,
       template_id, message_id, automation_id, step_id, url, source_name
FROM {db}.event_log;
