-- Latest state of each contact in each scenario ("contacts in scenarios" = status active or waiting).
-- One row per state change, versioned by event time: FINAL keeps the latest whatever the arrival
-- order of the inserts, and a re-delivered change rewrites the same row.
CREATE TABLE IF NOT EXISTS {db}.enrollment_state
(
    account_id      LowCardinality(String) COMMENT 'Account (tenant)',
    scenario_id     String COMMENT 'Automation (scenario) id',
    contact_key     String COMMENT 'The contact as keyed in Kafka: its email, or id:<contact_id>',
    contact_id      UInt64,
    email           String,
    scenario_name   String,
    start_id        String COMMENT 'Entry point of the current enrollment (set only when the scenario has several)',
    step_id         String COMMENT 'Current step',
    status          LowCardinality(String) COMMENT 'active, waiting, exited, removed',
    entered_at      DateTime64(3, 'UTC') COMMENT 'When the contact (re)entered the scenario',
    updated_at      DateTime64(3, 'UTC') COMMENT 'Event time of the last change',
    exit_reason     String COMMENT 'completed, goal_reached, ... or manually_removed',
    wait_until      Nullable(DateTime64(3, 'UTC')) COMMENT 'End of the current wait, if waiting',
    source_event_id String COMMENT 'event_id of the event that made this change',
    version         UInt64 COMMENT 'Event time (ms) * 1000 + change number: the latest change wins'
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (account_id, scenario_id, contact_key)
COMMENT 'Enrollment state: contacts in scenarios (read with FINAL)';
