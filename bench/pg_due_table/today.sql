\set n random(1, 2000000000)
INSERT INTO jobs (message_id, location_id, type, state, next_at, created_at, updated_at) VALUES ('m' || :n || '.' || :client_id || '.' || random(), 'L1', 'Email', 'queued', 0, 0, 0) RETURNING id AS jid \gset
WITH picked AS MATERIALIZED (SELECT id FROM jobs WHERE state='queued' AND next_at<=1 ORDER BY next_at, id LIMIT 1 FOR UPDATE SKIP LOCKED) UPDATE jobs SET state='claimed', attempts=attempts+1, updated_at=1, owner='i1' WHERE id IN (SELECT id FROM picked) AND state='queued' RETURNING id AS cid \gset
UPDATE jobs SET state='sending', rfc_message_id='abc@x', updated_at=2 WHERE id=:cid AND state='claimed';
UPDATE jobs SET state='sent', report_state='pending', report_status='delivered', next_at=3, last_code=250, updated_at=3, report_next_at=100, report_attempts=1 WHERE id=:cid AND state='sending';
UPDATE jobs SET report_state='done', report_next_at=5 WHERE id=:cid AND report_state='pending';
