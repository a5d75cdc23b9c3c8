package admin

import (
	"context"
	"fmt"
	"strings"

	outbox "github.com/webhook-outbox/webhook-outbox"
	"github.com/webhook-outbox/webhook-outbox/config"
)

// OrderingStatus is an ordered route's ordering, for the routes listing.
type OrderingStatus struct {
	OnDeadLetter string `json:"on_dead_letter"`
	// BlockedKeys counts the keys whose events wait on a head that is not
	// being delivered now (see outbox.BlockReason), all reasons together;
	// ByReason splits them.
	BlockedKeys int64                   `json:"blocked_keys"`
	ByReason    outbox.BlockedKeyCounts `json:"blocked_keys_by_reason"`
}

// BlockedKeysPage is one page of a route's blocked keys.
type BlockedKeysPage struct {
	Keys []outbox.BlockedKey `json:"blocked_keys"`
	// NextCursor continues the listing; "" on the last page.
	NextCursor string `json:"next_cursor,omitempty"`
}

// ParseBlockReason reads a reason an operator typed: dead_letter,
// retrying, no_head, or "" for all.
func ParseBlockReason(s string) (outbox.BlockReason, error) {
	switch r := outbox.BlockReason(s); r {
	case "", outbox.BlockedByDeadLetter, outbox.BlockedByRetry, outbox.BlockedNoHead:
		return r, nil
	}
	return "", outbox.Errorf(outbox.EINVALID, "reason %q is not one of dead_letter, retrying, no_head", s)
}

// orderedRoute returns the route if it exists and has ordering.
func (s *Service) orderedRoute(name string) (*config.Route, error) {
	r, err := s.checkRoute(name)
	if err != nil {
		return nil, err
	}
	if r.Ordering == nil {
		var ordered []string
		for _, rc := range s.cfg.Routes {
			if rc.Ordering != nil {
				ordered = append(ordered, rc.Name)
			}
		}
		list := "none is"
		if len(ordered) > 0 {
			list = strings.Join(ordered, ", ")
		}
		return nil, outbox.Errorf(outbox.EINVALID, "route %s has no ordering, so no blocked keys (ordered routes: %s)", name, list)
	}
	return r, nil
}

// BlockedKeys lists a route's blocked keys, of one reason if reason is set,
// with the head event of each and how many events wait behind it, in
// ordering value order, up to limit per page after cursor ("" for the
// first page).
func (s *Service) BlockedKeys(ctx context.Context, route string, reason outbox.BlockReason, limit int, cursor string) (*BlockedKeysPage, error) {
	if _, err := s.orderedRoute(route); err != nil {
		return nil, err
	}
	if limit < 1 || limit > 1000 {
		return nil, outbox.Errorf(outbox.EINVALID, "limit %d is out of range: use 1 to 1000", limit)
	}
	keys, next, err := s.store.BlockedKeys(ctx, route, reason, cursor, limit)
	if err != nil {
		return nil, err
	}
	return &BlockedKeysPage{Keys: keys, NextCursor: next}, nil
}

// ReleaseResult says which keys a release let go on.
type ReleaseResult struct {
	Released []string `json:"released"`
	// NotBlocked are the keys asked for that no dead letter held.
	NotBlocked []string `json:"not_blocked,omitempty"`
}

// ReleaseBlockedKeys lets keys of a route held by a dead letter
// (on_dead_letter: block) go on without retrying it: each key's next event
// is delivered, and the dead letter stays in the dead letters, to retry or
// leave. Retrying the dead letter instead delivers it first.
func (s *Service) ReleaseBlockedKeys(ctx context.Context, route string, keys []string) (*ReleaseResult, error) {
	if _, err := s.orderedRoute(route); err != nil {
		return nil, err
	}
	if len(keys) == 0 {
		return nil, outbox.Errorf(outbox.EINVALID, "name at least one ordering key to release")
	}
	released, err := s.store.ReleaseBlockedKeys(ctx, route, keys)
	if err != nil {
		return nil, fmt.Errorf("error releasing keys of route %s: %w", route, err)
	}
	res := &ReleaseResult{Released: released}
	done := map[string]bool{}
	for _, k := range released {
		done[k] = true
	}
	for _, k := range keys {
		if !done[k] {
			res.NotBlocked = append(res.NotBlocked, k)
			done[k] = true
		}
	}
	return res, nil
}
