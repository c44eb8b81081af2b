-- The scenario log marks what the automation engine still does for an enrollment already closed (an email
-- sent after a manual removal: a known complaint about comparable systems), so it can be found:
-- attribution 'after_removal' or 'after_exit' (processors/scenarios.py, CLOSED_MARKS).
ALTER TABLE {db}.scenario_log
    COMMENT COLUMN IF EXISTS attribution 'automation (its own event), message (the email this scenario sent), enrollment (active at its current step), after_removal / after_exit (an automation event for an enrollment already removed / exited)';

ALTER TABLE {db}.v_scenario_log
    COMMENT COLUMN attribution 'How the row was tied to the scenario: automation, message, enrollment; after_removal / after_exit: the engine acted on an enrollment already removed / exited';
