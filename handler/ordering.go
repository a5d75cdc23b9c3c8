package handler

import (
	"fmt"
	"net/http"
	"strconv"

	"github.com/gorilla/mux"

	"github.com/webhook-outbox/webhook-outbox/admin"
)

// GET /admin/v1/routes/{route}/blocked-keys?reason=&limit=&cursor=: the
// route's blocked ordering keys, each with its head event and the number
// of events waiting behind it.
func (a *adminAPI) blockedKeys(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	for k := range q {
		switch k {
		case "reason", "limit", "cursor":
		default:
			writeError(w, errorf(http.StatusBadRequest, fmt.Sprintf("unknown parameter %q: use reason, limit, cursor", k)))
			return
		}
	}
	reason, err := admin.ParseBlockReason(q.Get("reason"))
	if err != nil {
		a.fail(w, r, err)
		return
	}
	limit := 100
	if s := q.Get("limit"); s != "" {
		if limit, err = strconv.Atoi(s); err != nil {
			writeError(w, errorf(http.StatusBadRequest, "limit must be a number from 1 to 1000"))
			return
		}
	}
	page, err := a.admin.BlockedKeys(r.Context(), mux.Vars(r)["route"], reason, limit, q.Get("cursor"))
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, page)
}

type releaseBody struct {
	Keys []string `json:"keys"`
}

// POST /admin/v1/routes/{route}/blocked-keys/release with {"keys": [...]}:
// the keys held by a dead letter go on; the dead letters stay.
func (a *adminAPI) releaseBlockedKeys(w http.ResponseWriter, r *http.Request) {
	var body releaseBody
	if err := decodeBody(r, &body); err != nil {
		a.fail(w, r, err)
		return
	}
	route := mux.Vars(r)["route"]
	res, err := a.admin.ReleaseBlockedKeys(r.Context(), route, body.Keys)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	a.logger.Info("blocked ordering keys released", "route", route, "released", len(res.Released), "not_blocked", len(res.NotBlocked))
	writeJSON(w, http.StatusOK, res)
}
