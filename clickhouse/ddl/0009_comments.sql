-- Comments on the columns that had none, and on the analyst views (their columns too): an analyst reads
-- them in system.columns / DESCRIBE. Found in review: the README said every table and column had one.
-- (The materialized views' own columns are plumbing: their targets carry the comments.)
ALTER TABLE {db}.event_log
    COMMENT COLUMN IF EXISTS form_id 'Form id (form events)',
    COMMENT COLUMN IF EXISTS list_id 'List id (list additions)';

ALTER TABLE {db}.scenario_log
    COMMENT COLUMN IF EXISTS src_topic 'Kafka topic the source event was read from',
    COMMENT COLUMN IF EXISTS src_partition 'Its partition',
    COMMENT COLUMN IF EXISTS src_offset 'Its offset',
    COMMENT COLUMN IF EXISTS ingested_at 'When the row was written';

ALTER TABLE {db}.enrollment_state
    COMMENT COLUMN IF EXISTS contact_id 'Platform contact id (0 = unknown)',
    COMMENT COLUMN IF EXISTS email 'Contact email, lower-cased',
    COMMENT COLUMN IF EXISTS scenario_name 'Scenario (automation) name';

ALTER TABLE {db}.enrollment_state_by_entry
    COMMENT COLUMN IF EXISTS contact_id 'Platform contact id (0 = unknown)',
    COMMENT COLUMN IF EXISTS email 'Contact email, lower-cased',
    COMMENT COLUMN IF EXISTS scenario_name 'Scenario (automation) name';

ALTER TABLE {db}.api_keys
    COMMENT COLUMN IF EXISTS created_at 'When the key was created',
    COMMENT COLUMN IF EXISTS revoked '1 = the key no longer opens anything';

ALTER TABLE {db}.v_event_log MODIFY COMMENT 'Event log for analysts: deduplicated (FINAL), internal requests named';
ALTER TABLE {db}.v_event_log
    COMMENT COLUMN account_id 'Account (tenant)',
    COMMENT COLUMN occurred_at 'When the event happened (UTC, ms)',
    COMMENT COLUMN event_type 'Event type: track, page, form, campaign_opened, automation_started, ...',
    COMMENT COLUMN event_name 'Name of a custom (track) event, e.g. order_created',
    COMMENT COLUMN name 'Name of the form, list, email, automation or page',
    COMMENT COLUMN email 'Contact email, lower-cased',
    COMMENT COLUMN contact_id 'Platform contact id (0 = unknown)',
    COMMENT COLUMN ip 'Contact IP, or "internal request" when the platform triggered the event',
    COMMENT COLUMN message_id 'Email message id',
    COMMENT COLUMN template_id 'Transactional email template id (0 = none)',
    COMMENT COLUMN campaign_id 'Campaign id (0 = none)',
    COMMENT COLUMN scenario_id 'Automation (scenario) id of automation events',
    COMMENT COLUMN step_id 'Scenario step id',
    COMMENT COLUMN url 'Page or link URL',
    COMMENT COLUMN properties 'Custom properties as sent (JSON)',
    COMMENT COLUMN details 'The other fields of the event (JSON)',
    COMMENT COLUMN event_id 'Event id (unique; deduplication key)';

ALTER TABLE {db}.v_scenario_log MODIFY COMMENT 'Scenario log for analysts: deduplicated (FINAL), messages rendered in English and French';
ALTER TABLE {db}.v_scenario_log
    COMMENT COLUMN account_id 'Account (tenant)',
    COMMENT COLUMN occurred_at 'When it happened (UTC, ms)',
    COMMENT COLUMN user_email 'Contact email, lower-cased',
    COMMENT COLUMN contact_id 'Platform contact id (0 = unknown)',
    COMMENT COLUMN scenario_id 'Automation (scenario) id',
    COMMENT COLUMN scenario_name 'Scenario name',
    COMMENT COLUMN step_id 'Step id',
    COMMENT COLUMN start_id 'Entry point, only when the scenario has several',
    COMMENT COLUMN workflow_point 'started, restarted, exited, manually_removed (empty otherwise)',
    COMMENT COLUMN type 'Type of the event behind the row',
    COMMENT COLUMN message_code 'Message code (schemas/messages.py)',
    COMMENT COLUMN message_params 'Message parameters (JSON)',
    COMMENT COLUMN message_en 'The message in English (times in UTC)',
    COMMENT COLUMN message_fr 'The message in French (times in UTC)',
    COMMENT COLUMN attribution 'How the row was tied to the scenario: automation, message, enrollment',
    COMMENT COLUMN source_event_id 'Id of the event behind the row';

ALTER TABLE {db}.v_contacts_in_scenarios MODIFY COMMENT 'Contacts now active or waiting in each scenario (latest state, FINAL)';
ALTER TABLE {db}.v_contacts_in_scenarios
    COMMENT COLUMN account_id 'Account (tenant)',
    COMMENT COLUMN email 'Contact email, lower-cased',
    COMMENT COLUMN contact_id 'Platform contact id (0 = unknown)',
    COMMENT COLUMN scenario_id 'Automation (scenario) id',
    COMMENT COLUMN scenario_name 'Scenario name',
    COMMENT COLUMN step 'Current step',
    COMMENT COLUMN status 'active or waiting',
    COMMENT COLUMN entered_at 'When the contact (re)entered the scenario',
    COMMENT COLUMN updated_at 'Last change of the enrollment',
    COMMENT COLUMN wait_until 'End of the current wait (waiting contacts)';
