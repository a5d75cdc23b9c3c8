package admin

// SetBatchSizes lowers the batch sizes of replays and bulk retries, so tests
// can interrupt them between batches.
func SetBatchSizes(s *Service, replay, retry int) { s.replayBatch, s.retryBatch = replay, retry }
