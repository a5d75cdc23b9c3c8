DROP TABLE outbox_replays;
