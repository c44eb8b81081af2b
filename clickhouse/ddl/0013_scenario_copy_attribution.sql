-- The scenarios view shows and filters the attribution (after_removal: an email the engine still sent after a
-- manual removal, a known complaint; found in review: it could only be found in SQL). Its copy sorted by
-- contact (0007) serves the pages of one contact, so it carries the column too: added, its materialized view
-- re-created to copy it, and the rows logged before this file copied again (ReplacingMergeTree without a
-- version keeps the row inserted last, so FINAL shows each once, with its attribution).
ALTER TABLE {db}.scenario_log_by_contact
    ADD COLUMN IF NOT EXISTS attribution LowCardinality(String)
    COMMENT 'How the row was tied to the scenario: automation, message, enrollment, after_removal, after_exit'
    AFTER message_params;

DROP VIEW IF EXISTS {db}.scenario_log_by_contact_mv;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.scenario_log_by_contact_mv TO {db}.scenario_log_by_contact AS
SELECT account_id, email, occurred_at, scenario_id, source_event_id, scenario_name, contact_id, step_id, start_id,
       workflow_point, type, message_code, message_params, attribution
FROM {db}.scenario_log;

INSERT INTO {db}.scenario_log_by_contact
SELECT account_id, email, occurred_at, scenario_id, source_event_id, scenario_name, contact_id, step_id, start_id,
       workflow_point, type, message_code, message_params, attribution
FROM {db}.scenario_log;
