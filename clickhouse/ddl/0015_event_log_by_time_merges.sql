-- 0014 made event_log_by_time merge less often too; it is the copy CSV dumps and the pages without an email
-- read, and with more parts left between merges the dump of a 1M-row range grew the process's memory by 78-109
-- MB instead of 38 (the goal: 100), and the account's week page took 42 ms instead of 33 (bench/HISTORY.md).
-- It merges as it did. The event log itself keeps 10: its pages, by contact, stayed under 12 ms at 10M rows.
ALTER TABLE {db}.event_log_by_time MODIFY SETTING merge_selector_base = 5;
