-- The tables every event writes merge less often, more parts at a time: merge_selector_base 5 -> 10 lowers the
-- merges' write amplification (each row rewritten fewer times). In the worker the engine's merges were the
-- largest share of its native CPU (4.8 of ~13 CPU-µs per event, by thread, at 50k events/s); with 10 the
-- engine's threads used 0.43-0.49 of a core instead of 0.54-0.63 and the worker ran at 49.0k against 47.5k
-- events/s (bench/HISTORY.md). The cost: more parts between merges (event_log after 1M events: 13 instead of 3),
-- which reads with FINAL merge as they read.
ALTER TABLE {db}.event_log MODIFY SETTING merge_selector_base = 10;
ALTER TABLE {db}.event_log_by_time MODIFY SETTING merge_selector_base = 10;
ALTER TABLE {db}.scenario_log MODIFY SETTING merge_selector_base = 10;
ALTER TABLE {db}.scenario_log_by_contact MODIFY SETTING merge_selector_base = 10;
ALTER TABLE {db}.enrollment_state MODIFY SETTING merge_selector_base = 10;
ALTER TABLE {db}.enrollment_state_by_entry MODIFY SETTING merge_selector_base = 10;
