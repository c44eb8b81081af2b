-- A copy of the scenario log sorted by contact, for the scenario-log pages of one contact (query/views.py):
-- "everything that happened to this contact". scenario_log is sorted by scenario, so one contact's rows
-- are spread over the account's whole range; its email bloom filter still leaves hundreds of granules
-- to read at 10M rows (about 180 ms a page, p99 640 ms). Here they are one contiguous slice of the key.
-- Same deduplication as scenario_log: a ReplacingMergeTree read with FINAL, whose sorting key holds
-- scenario_log's and the email in front. Every copy of a row derives from the same event and carries the
-- same email, so the duplicates of a row are one key here too.
-- Filled by the materialized view below from every insert into scenario_log (the replay rebuilds it from
-- its shadow scenario log, replay/run.py); the TTL follows scenario_log's (autologs/migrate.py).
CREATE TABLE IF NOT EXISTS {db}.scenario_log_by_contact
(
    account_id      LowCardinality(String) COMMENT 'Account (tenant)',
    email           String COMMENT 'user_email: the contact email',
    occurred_at     DateTime64(3, 'UTC') COMMENT 'date: when it happened (UTC, ms)',
    scenario_id     String COMMENT 'Automation (scenario) id',
    source_event_id String COMMENT 'event_id of the event this row derives from',
    scenario_name   String COMMENT 'Automation name at the time of the event',
    contact_id      UInt64 COMMENT 'Internal contact id (0 = unknown)',
    step_id         String COMMENT 'Step the contact was at when it happened',
    start_id        String COMMENT 'Entry point; only set when the scenario has several',
    workflow_point  LowCardinality(String) COMMENT 'started, restarted, exited, manually_removed; empty otherwise',
    type            LowCardinality(String) COMMENT 'Event type',
    message_code    LowCardinality(String) COMMENT 'Message catalogue code; rendered in English or French when read',
    message_params  String COMMENT 'Parameters of the message (JSON)'
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(occurred_at)
ORDER BY (account_id, email, occurred_at, scenario_id, source_event_id)
COMMENT 'Scenario log by contact (pages with an email): the scenarios view columns of scenario_log, read with FINAL';

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.scenario_log_by_contact_mv TO {db}.scenario_log_by_contact AS
SELECT account_id, email, occurred_at, scenario_id, source_event_id, scenario_name, contact_id, step_id, start_id,
       workflow_point, type, message_code, message_params
FROM {db}.scenario_log;

-- Rows logged before this file: copied once (a row that the view also copied meanwhile is one key, so
-- FINAL shows it once).
INSERT INTO {db}.scenario_log_by_contact
SELECT account_id, email, occurred_at, scenario_id, source_event_id, scenario_name, contact_id, step_id, start_id,
       workflow_point, type, message_code, message_params
FROM {db}.scenario_log;
