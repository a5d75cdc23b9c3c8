-- Which events of one conversation failed for good, and why?
-- Replace the conversation id. The three Genesys shapes keep it in different
-- places: a data action at the top, the bare notification in eventBody, and
-- EventBridge under detail.eventBody.
SELECT job_id, route, key, state, attempts, failed_at, last_error
FROM dead_letters
WHERE '3f1c2a9e-8b7d-4c6e-9a5f-0e1d2c3b4a59' IN (
        payload ->> 'conversationId',
        payload #>> '{eventBody,conversationId}',
        payload #>> '{detail,eventBody,conversationId}')
ORDER BY failed_at DESC;
