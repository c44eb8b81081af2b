-- v_event_log names an internal request only where the platform triggered the event. A contact's email
-- engagement (campaign and transactional opens, clicks, unsubscribes) comes from the email services'
-- webhooks, which never carry the contact's IP: there an empty ip is unknown, shown empty (found in review;
-- the pages and dumps do the same, query/views.py `shown_ip`). The view is dropped and created again (a
-- view holds no data), with the comments of 0009.
DROP VIEW IF EXISTS {db}.v_event_log;

CREATE VIEW IF NOT EXISTS {db}.v_event_log AS
SELECT account_id, occurred_at, event_type, event_name, source_name AS name, email, contact_id,
       if(ip != '', ip, if(event_type IN ('campaign_opened', 'campaign_clicked', 'campaign_unsubscribed',
                                          'templates_opened', 'templates_clicked', 'templates_unsubscribed'),
                           '', 'internal request')) AS ip,
       message_id, template_id, campaign_id, automation_id AS scenario_id, step_id, url, properties, details,
       event_id
FROM {db}.event_log FINAL
COMMENT 'Event log for analysts: deduplicated (FINAL), internal requests named';

ALTER TABLE {db}.v_event_log
    COMMENT COLUMN account_id 'Account (tenant)',
    COMMENT COLUMN occurred_at 'When the event happened (UTC, ms)',
    COMMENT COLUMN event_type 'Event type: track, page, form, campaign_opened, automation_started, ...',
    COMMENT COLUMN event_name 'Name of a custom (track) event, e.g. order_created',
    COMMENT COLUMN name 'Name of the form, list, email, automation or page',
    COMMENT COLUMN email 'Contact email, lower-cased',
    COMMENT COLUMN contact_id 'Platform contact id (0 = unknown)',
    COMMENT COLUMN ip 'Contact IP; "internal request" when the platform triggered the event; empty when unknown (email opens, clicks and unsubscribes without one)',
    COMMENT COLUMN message_id 'Email message id',
    COMMENT COLUMN template_id 'Transactional email template id (0 = none)',
    COMMENT COLUMN campaign_id 'Campaign id (0 = none)',
    COMMENT COLUMN scenario_id 'Automation (scenario) id of automation events',
    COMMENT COLUMN step_id 'Scenario step id',
    COMMENT COLUMN url 'Page or link URL',
    COMMENT COLUMN properties 'Custom properties as sent (JSON)',
    COMMENT COLUMN details 'The other fields of the event (JSON)',
    COMMENT COLUMN event_id 'Event id (unique; deduplication key)';
